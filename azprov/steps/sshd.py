"""sshd's password policy: ``disablePasswordAuthentication`` as a drop-in sshd reads first.

``/etc/ssh/sshd_config.d/10-azprov.conf`` says ``PasswordAuthentication no`` (or ``yes``).  sshd
takes the first value it reads, so an early-sorting drop-in wins over the image's later ones; the
step says so in the log when an earlier line still wins.  When ``sshd_config`` does not include
``sshd_config.d`` the step changes nothing and says why: azprov never rewrites ``sshd_config``.
A running sshd (live host with systemd) is reloaded; on first boot it has not started yet.
"""

from __future__ import annotations

import logging

from azprov.host import Host
from azprov.steps import sshd_config

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
    return None


def apply(host: Host, metadata, settings) -> bool:
    if not host.exists(sshd_config.SSHD_CONFIG):
        log.info("no %s: sshd is not installed, password policy not set", sshd_config.SSHD_CONFIG)
        return False
    disable = metadata.os_profile.disable_password_authentication
    if not sshd_config.includes(host, DROPIN):
        current = sshd_config.first(host, "passwordauthentication")
        log.warning(
            "%s does not include %s/*.conf: PasswordAuthentication left as the image sets it "
            "(%s); azprov does not rewrite sshd_config", sshd_config.SSHD_CONFIG,
            sshd_config.DROPIN_DIR, current.value if current else "sshd's default, yes",
        )
        return False
    changed = host.write_file(DROPIN, render(disable), mode=0o644, parents=0o755)
    winner = sshd_config.first(host, "passwordauthentication")
    if winner is not None and winner.source != DROPIN:
        log.warning("sshd reads PasswordAuthentication %s from %s line %d before %s",
                    winner.value, winner.source, winner.line, DROPIN)
    if changed:
        log.info("%s: PasswordAuthentication %s", DROPIN, "no" if disable else "yes")
        if host.systemd_running():
            # --no-block: on first boot sshd is queued behind azprov; never wait on its job
            host.run(["systemctl", "--no-block", "try-reload-or-restart", "ssh.service",
                      "sshd.service"], timeout=60, check=False)
    return changed
