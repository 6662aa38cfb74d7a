"""sshd's password policy: ``disablePasswordAuthentication`` as a drop-in sshd reads first.

``/etc/ssh/sshd_config.d/10-azprov.conf`` says ``PasswordAuthentication no`` (or ``yes``).  sshd
takes the first value it reads, so an early-sorting drop-in wins over the image's later ones.
Before anything changes, the step reads the configuration as sshd will with the drop-in in place:
if something sshd reads first (an image drop-in sorting before azprov's, a line of
``sshd_config`` above its Include, or no Include of ``sshd_config.d`` at all and another value or
sshd's default) gives another value, provisioning fails (``sshd_password_policy_overridden``)
instead of posting Ready for a VM whose policy is not what was asked.  azprov never rewrites the
image's files.  A ``Match`` block that sets another value is a warning (it applies to some
connections only), and so is keyboard-interactive authentication through PAM when passwords are
to be off.  A running sshd (live host with systemd) is reloaded; on first boot it has not started
yet.
"""

from __future__ import annotations

import logging

from azprov.errors import SshdPolicyOverridden
from azprov.host import Host
from azprov.host import sshd_config

log = logging.getLogger(__name__)

NAME = "sshd"
DROPIN = sshd_config.DROPIN_DIR + "/10-azprov.conf"


def render(disable_password_authentication: bool) -> bytes:
    value = "no" if disable_password_authentication else "yes"
    return (
        "# Written by azprov from the VM's osProfile.disablePasswordAuthentication.\n"
        f"PasswordAuthentication {value}\n"
    ).encode()


def enabled(settings) -> bool:
    return settings.configure_sshd


def check(host: Host, metadata, settings) -> None:
    if not host.exists(sshd_config.SSHD_CONFIG):
        return
    host.check_writable(DROPIN)
    effective(host, metadata.os_profile.disable_password_authentication)


def effective(host: Host, disable: bool) -> str:
    """The PasswordAuthentication sshd will use once azprov's drop-in is in place; raises
    SshdPolicyOverridden when that is not what ``disable`` asks."""
    wanted = "no" if disable else "yes"
    included = sshd_config.includes(host, DROPIN)
    overlay = {DROPIN: render(disable).decode()} if included else {}
    matched: list = []
    sshd_config.directives(host, overlay=overlay, matched=matched)
    winner = sshd_config.first(host, "passwordauthentication", overlay=overlay)
    got = sshd_config.value(winner, "yes")
    if got != wanted:
        if winner is None:
            where = (f"sshd's default (yes): {sshd_config.SSHD_CONFIG} does not include "
                     f"{sshd_config.DROPIN_DIR}/*.conf")
        else:
            where = f"{winner.source} line {winner.line}, read before {DROPIN}"
            if not included:
                where = (f"{winner.source} line {winner.line}; {sshd_config.SSHD_CONFIG} does not "
                         f"include {sshd_config.DROPIN_DIR}/*.conf")
        raise SshdPolicyOverridden(
            f"the VM asks for PasswordAuthentication {wanted}, but sshd would use {got} from "
            f"{where}; azprov does not rewrite the image's sshd configuration",
            source=winner.source if winner else sshd_config.SSHD_CONFIG, wanted=wanted)
    for directive in matched:
        if directive.keyword == "passwordauthentication" and sshd_config.value(directive, "") != wanted:
            log.warning("%s line %d sets PasswordAuthentication %s inside a Match block: some "
                        "connections get it instead of %s", directive.source, directive.line,
                        directive.value, wanted)
    if disable:
        kbd = sshd_config.first(host, "kbdinteractiveauthentication", overlay=overlay) or \
            sshd_config.first(host, "challengeresponseauthentication", overlay=overlay)
        pam = sshd_config.first(host, "usepam", overlay=overlay)
        if sshd_config.value(kbd, "yes") == "yes" and sshd_config.value(pam, "no") == "yes":
            log.warning("sshd allows keyboard-interactive authentication through PAM "
                        "(KbdInteractiveAuthentication %s): accounts with a password can still "
                        "log in with it", sshd_config.value(kbd, "yes"))
    return got


def apply(host: Host, metadata, settings) -> bool:
    if not host.exists(sshd_config.SSHD_CONFIG):
        log.info("no %s: sshd is not installed, password policy not set", sshd_config.SSHD_CONFIG)
        return False
    disable = metadata.os_profile.disable_password_authentication
    if not sshd_config.includes(host, DROPIN):
        value = effective(host, disable)
        log.warning("%s does not include %s/*.conf: azprov writes no drop-in; the image's "
                    "configuration already says PasswordAuthentication %s",
                    sshd_config.SSHD_CONFIG, sshd_config.DROPIN_DIR, value)
        return False
    effective(host, disable)
    changed = host.write_file(DROPIN, render(disable), mode=0o644, parents=0o755)
    if changed:
        log.info("%s: PasswordAuthentication %s", DROPIN, "no" if disable else "yes")
        if host.probes.systemd_running():
            # --no-block: on first boot sshd is queued behind azprov; never wait on its job
            host.run(["systemctl", "--no-block", "try-reload-or-restart", "ssh.service",
                      "sshd.service"], timeout=60, check=False)
    return changed
