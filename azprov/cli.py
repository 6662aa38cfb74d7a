"""The ``azprov`` command line: parsers, configuration, logging, and errors → exit codes.

Each command's handler lives in the module named in :data:`COMMANDS` and is imported only when
that command runs, so ``azprov report-ready`` does not pay for the provisioning steps or the
emulator.  A handler is ``handler(args, config, host) -> int``: the CLI reads the configuration and
builds the one :class:`~azprov.host.Host` of the run (at ``--root``, else ``/``) and hands both to
it, so nothing below takes a root path.  Expected failures are
:class:`~azprov.errors.AzprovError` and become one ``azprov: ...`` line on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from azprov import __version__, arguments
from azprov.errors import AzprovError, ExitCode, InternalError, NotRoot, failure_object

log = logging.getLogger("azprov")

EXIT_CODES_HELP = """\
exit codes:
  0  success (or nothing to do: this VM is already provisioned)
  1  internal error (a bug: the log has the traceback)
  2  bad command line
  3  configuration file unreadable or invalid
  4  the fabric (WireServer or IMDS) gave no usable answer before the deadline
  5  the fabric answered with something invalid, or refused the request
  6  a provisioning step failed (ProvisioningFailed was reported to Azure)
  7  azprov refused to provision this VM (another provisioner, a pool VM, no osProfile)
  8  another azprov is running
  9  must run as root: provision, early-hostname, report-ready, report-failure, deprovision, firewall,
     status, check and temp-disk (--root too); refused before anything is read or sent
  10 azprov check: an image captured now would not provision (every problem is listed);
     azprov fabric boot: the booted image did not provision (the verdict says why)
  130 interrupted
with --json, a failure prints one JSON object on stdout (the log stays on stderr):
  {"error": "<message>", "reason": "<reason token, or null>", "exit_code": N}
"""

EPILOG = f"""\
examples:
  azprov provision                    what azprov.service runs on first boot
  azprov early-hostname               what azprov-hostname.service runs before the network
  azprov status                       what was provisioned, the last attempt, and whether an image captured now would provision
  azprov status --wait                wait for the first-boot run; exit 0 if provisioned, 1 if not
  azprov goalstate --json             the WireServer goal state, as JSON
  azprov report-ready -v              post Ready by hand, showing every HTTP attempt
  azprov report-failure --reason "disk setup failed"
  azprov deprovision --user           prepare this VM for capture as a generalized image
  azprov check                        the last build step: fails unless an image captured now would provision
  azprov fabric serve --wireserver 127.0.0.1:8080 --imds 127.0.0.1:8081

{EXIT_CODES_HELP}
configuration: /etc/azprov/azprov.toml and /etc/azprov/azprov.toml.d/*.toml; see azprov(8).
logs: journalctl -u azprov (when run by systemd), else stderr.
"""


class UsageError(Exception):
    """A bad command line (argparse's error), raised instead of exiting so that :func:`main` can
    also say it as JSON."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[override]
        raise UsageError(self, message)


def _add_common(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """Options every command accepts, before or after its name (``suppress``: after)."""
    default = (lambda value: argparse.SUPPRESS) if suppress else (lambda value: value)
    parser.add_argument("-v", "--verbose", action="count", default=default(0),
                        help="show progress (-v) and debugging detail (-vv) on stderr")
    parser.add_argument("--config", metavar="FILE", default=default(None),
                        help="read this file instead of /etc/azprov/azprov.toml (drop-ins still apply)")


# ---------------------------------------------------------------------- the command table

Option = Tuple[Tuple[str, ...], Dict[str, Any]]  # add_argument's flags and keywords


def option(*flags: str, **kwargs: Any) -> Option:
    return flags, kwargs


def root(help: str) -> Option:
    return option("--root", metavar="DIR", default="/", type=arguments.directory, help=help)


JSON = option("--json", action="store_true",
              help="print the result as JSON; a failure as {\"error\", \"reason\", \"exit_code\"}")
FABRIC = (
    option("--wireserver", metavar="ADDR", type=arguments.address,
           help="WireServer address: HOST, HOST:PORT or http://HOST[:PORT] "
                "(default: DHCP option 245, else 168.63.129.16)"),
    option("--imds", metavar="ADDR", type=arguments.address,
           help="IMDS address, same forms (default: 169.254.169.254)"),
    option("--timeout", metavar="SECONDS", type=arguments.positive_seconds,
           help="give up after this long: caps the retry deadlines (defaults: WireServer 1200 s, IMDS 300 s)"),
    JSON,
)
REPORT = (
    option("--protocol", choices=("xml", "json"),
           help="health report protocol (default: [health] protocol, else xml)"),
    root("read DHCP leases and write the KVP pool under DIR"),
)
IMAGE_TREE = root("apply changes to the image tree at DIR instead of this host")
KVP_ROOT = "it writes the KVP report in /var/lib/hyperv, which belongs to root"


@dataclass(frozen=True)
class Command:
    """One command of ``azprov``: its handler (``module:function``, imported only when it runs),
    its help, its options in order, why it needs root (None: it does not), and its actions
    (``azprov fabric serve|disc``: sub-commands with their own options)."""

    name: str
    handler: Optional[str]
    help: str
    description: str
    options: Tuple[Option, ...] = ()
    needs_root: Optional[str] = None
    actions: Tuple["Command", ...] = ()


TABLE = (
    Command("provision", "azprov.provision:command",
            "provision this VM on first boot (what azprov.service runs)",
            "Fetch the goal state and instance metadata, set the hostname, create the admin "
            "user, install the SSH keys, set sshd's password policy, generate missing host "
            "keys, report Ready, record the VM as provisioned and disable azprov.service. "
            "Exits 0 at once when this VM id is already provisioned. Any failure is reported "
            "to Azure as ProvisioningFailed with the reason.",
            (*FABRIC, IMAGE_TREE),
            needs_root="it changes the system: hostname, users, SSH keys, sshd, /var/lib/azprov; with "
                       "--root as well, since useradd --root chroots and files are given to the admin user"),
    Command("early-hostname", "azprov.early_hostname:command",
            "set the host name from the provisioning disc, before the network "
            "(what azprov-hostname.service runs)",
            "Read the host name from ovf-env.xml on the provisioning disc (never mounted, no "
            "network) and make it this system's name, so that the first DHCP request already "
            "carries it to Azure DNS. Does nothing on a VM already provisioned; a problem is "
            "logged and left to azprov provision. Exits 0.",
            (JSON, root("read the disc under DIR (DIR/dev/sr0, ...) and write DIR/etc/hostname")),
            needs_root="it sets the host name and writes /etc/hostname"),
    Command("report-ready", "azprov.commands:report_ready", "post Ready for the current goal state",
            "Write the KVP PROVISIONING_REPORT (result=success), then fetch a fresh goal "
            "state and post a Ready health report echoing it (--protocol json: post "
            "{\"state\": \"Ready\"} to /provisioning/health instead).",
            (*FABRIC, *REPORT), needs_root=KVP_ROOT),
    Command("report-failure", "azprov.commands:report_failure", "post NotReady/ProvisioningFailed with a reason",
            "Fetch a fresh goal state and post NotReady with sub-status ProvisioningFailed; "
            "the Description carries REASON (encoded, at most 512 characters). Azure then "
            "fails the deployment promptly with that text instead of timing out. The same "
            "report goes to the KVP PROVISIONING_REPORT first.",
            (option("--reason", required=True, metavar="TEXT", type=arguments.text, help="why provisioning failed"),
             *FABRIC, *REPORT), needs_root=KVP_ROOT),
    Command("goalstate", "azprov.commands:goalstate", "fetch and print the WireServer goal state",
            "Print the goal state's incarnation, container id and instance id.", FABRIC),
    Command("metadata", "azprov.commands:metadata", "fetch and print the instance metadata azprov uses",
            "Print what IMDS says azprov should provision: computer name, admin user, "
            "SSH keys, password policy, VM id, pool type; and what the provisioning disc "
            "carries, password redacted.",
            (*FABRIC, root("look for the provisioning disc under DIR (DIR/dev/sr0, ...)"))),
    Command("endpoint", "azprov.commands:endpoint", "print the WireServer address and where it came from",
            "Print the WireServer address azprov would use: --wireserver or the "
            "configuration, else DHCP option 245 from the leases of systemd-networkd, "
            "dhclient or dhcpcd, else 168.63.129.16.",
            (*FABRIC, root("read DHCP leases under DIR"))),
    Command("config", "azprov.commands:show_config", "print the effective configuration",
            "Print the configuration after files, drop-ins and command-line options, as TOML.", FABRIC),
    Command("status", "azprov.status:command", "show what azprov provisioned on this VM",
            "Show the recorded provisioning state, the last attempt and whether "
            "azprov.service is enabled; warn when an image captured now would not provision. "
            "With --wait: wait while azprov.service runs, then exit 0 when this VM is "
            "provisioned, 1 when it is not (the last attempt failed or was refused).",
            (IMAGE_TREE, JSON, option("--wait", action="store_true",
                                      help="wait for azprov.service to finish; exit 0 if provisioned, else 1")),
            needs_root="azprov's state and history in /var/lib/azprov can be read by root only"),
    Command("check", "azprov.check:command",
            "fail unless an image captured now would provision (the pre-capture gate)",
            "Check the image (this system, or the tree at --root) for everything that would keep "
            "a VM made from it from provisioning: azprov.service installed and enabled, no kill "
            "switch, no other provisioner, a configuration that loads, no SSH host keys, "
            "machine id, DHCP leases or azprov state left, no admin user azprov provisioned "
            "earlier, no network configuration pinned to a MAC address, and azprov's Python "
            "dependencies importable by the image's own interpreter.  Lists every problem with "
            "the command that fixes it and exits 10; exits 0 only when there is none.  Run it "
            "as root, as the last step before capture.",
            (IMAGE_TREE, JSON, option("--self-test", action="store_true", help=argparse.SUPPRESS)),
            needs_root="it reads azprov's state, which only root can, and other users' homes, and runs "
                       "the image's interpreter in a chroot"),
    Command("deprovision", "azprov.deprovision:command", "prepare this VM for capture as a generalized image",
            "Re-enable azprov.service and remove azprov's state, the SSH host keys, DHCP "
            "leases and /etc/machine-id, so that VMs created from an image of this disk "
            "provision again. Lists what it will do and asks first unless --force.",
            (option("--user", action="store_true", help="also remove the provisioned admin user and home"),
             option("--force", action="store_true", help="do not ask (--json never asks: it needs --force)"),
             IMAGE_TREE, JSON),
            needs_root="it removes users, SSH host keys, leases and /var/lib/azprov, which belong to root"),
    Command("firewall", "azprov.firewall:command",
            "let only root connect to the WireServer (what azprov-firewall.service runs)",
            "Set the rule that lets only root open TCP connections to the WireServer (DNS on "
            "port 53 stays open), with nft or iptables, as [wireserver] root_only says; with "
            "root_only = false, remove it. Idempotent.",
            (JSON,), needs_root="it changes the firewall rules of this machine (nft or iptables)"),
    Command("temp-disk", "azprov.tempdisk:command",
            "format (when fresh) and mount the VM's temporary disk, at every boot",
            "Find the VM's temporary disk (the SCSI resource disk, else an NVMe temp disk) and "
            "mount it on [temp_disk] mount_point (/mnt): the filesystem azprov made on an earlier "
            "boot is mounted again; a disk as Azure delivers it (an NTFS volume 'Temporary "
            "Storage' holding only DATALOSS_WARNING_README.txt, or a blank disk) is formatted "
            "first; a disk holding anything else is left alone with a warning. What "
            "azprov-temp-disk.service runs at every boot; `azprov status` shows the outcome.",
            (option("--dry-run", action="store_true", help="say what would be done, change nothing"), JSON),
            needs_root="it formats and mounts a disk and keeps its outcome in /var/lib/azprov"),
    Command("fabric", "azprov.fabric.cli:command", "run the built-in fabric emulator (for tests and image builds)",
            "A local WireServer and IMDS over real HTTP.", actions=(
                Command("serve", None, "serve the WireServer and IMDS until interrupted",
                        "Serve an emulated WireServer and IMDS, validate what guests send, log every "
                        "request as a JSON line, and play the faults of a scenario file "
                        "(docs/fabric-emulator.md).",
                        (option("--wireserver", dest="listen_wireserver", metavar="HOST:PORT", required=True,
                                type=arguments.listen_address),
                         option("--imds", dest="listen_imds", metavar="HOST:PORT", required=True,
                                type=arguments.listen_address),
                         option("--scenario", metavar="FILE", help="scenario file (.json or .toml)"),
                         option("--log", metavar="FILE", help="append request records here (default: stdout)"),
                         JSON)),
                Command("disc", None, "write the provisioning disc image (ovf-env.xml) of a scenario",
                        "Write the provisioning disc Azure would attach for the scenario (host name, "
                        "user, password, SSH keys, custom data) as an ISO9660 image, to boot an "
                        "image with it attached as a CD-ROM.",
                        (option("--scenario", metavar="FILE", help="scenario file (.json or .toml)"),
                         option("--output", "-o", metavar="FILE", required=True, help="the image to write (0600)"),
                         JSON)),
                Command("boot", None, "boot a disk image in QEMU against the emulator: would it provision on Azure?",
                        "Boot IMAGE (raw, qcow2 or fixed VHD; never written) in QEMU with Azure's DMI, "
                        "the provisioning disc and a DHCP server, against the emulated fabric at the "
                        "real addresses, with a generated SSH key; print whether Ready was reported, "
                        "the SSH login worked, the host name is right and azprov disabled its unit. "
                        "Exit 0 only when the image would provision. Needs root and QEMU "
                        "(docs/testing-vm.md).",
                        (option("image", metavar="IMAGE"),
                         option("--scenario", metavar="FILE", help="scenario file (.json or .toml): user, password, "
                                "custom data, names (the generated key is added to its keys)"),
                         option("--firmware", choices=("auto", "bios", "uefi"), default="auto",
                                help="auto (default): UEFI (OVMF, Gen2) for a GPT disk with an EFI system "
                                     "partition, else BIOS (Gen1)"),
                         option("--kernel", metavar="FILE", help="boot this kernel directly (an image without a boot loader)"),
                         option("--initrd", metavar="FILE", help="with --kernel: its initrd"),
                         option("--append", metavar="CMDLINE", help="with --kernel: the kernel command line"),
                         option("--timeout", type=float, default=600.0, metavar="SECONDS",
                                help="from power-on to the first health report (default 600)"),
                         option("--memory", type=int, default=1024, metavar="MIB", help="guest memory (default 1024)"),
                         option("--accel", choices=("tcg", "kvm"), default="tcg", help="QEMU accelerator (default tcg)"),
                         option("--keep", metavar="DIR", help="keep the VM's files here (console, logs, overlay, key)"),
                         JSON)),
            )),
)

COMMANDS = {command.name: command.handler for command in TABLE}
# Commands that refuse to run without root, before anything is read or sent, and why.  --root
# does not lift it: an image tree's files belong to root and to its users too.
NEEDS_ROOT = {command.name: command.needs_root for command in TABLE if command.needs_root}


def _selected_command(argv: List[str]) -> Optional[str]:
    """The command named on the command line, if any (options before it may take a value)."""
    for index, word in enumerate(argv):
        if word in COMMANDS and (index == 0 or argv[index - 1] != "--config"):
            return word
    return None


def build_parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    """The parser of :data:`TABLE`, or with ``only``, just that command's options (the others
    listed with their help line: start-up time)."""
    parser = _Parser(
        prog="azprov",
        description="Agentless first-boot provisioning for Azure Linux VMs: sets the hostname, "
                    "creates the admin user, installs SSH keys and tells Azure the VM is ready.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"azprov {__version__}")
    _add_common(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in TABLE:
        if only is not None and command.name != only:
            sub.add_parser(command.name, help=command.help)
            continue
        child = sub.add_parser(command.name, help=command.help, description=command.description,
                               epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_common(child, suppress=True)
        child.set_defaults(handler=command.handler)
        _add_options(child, command)
    return parser


def _add_options(parser: argparse.ArgumentParser, command: Command) -> None:
    for flags, kwargs in command.options:
        parser.add_argument(*flags, **kwargs)
    if command.actions:
        actions = parser.add_subparsers(dest=f"{command.name}_command", metavar="ACTION", required=True)
        for action in command.actions:
            _add_options(actions.add_parser(action.name, help=action.help, description=action.description), action)


def _load_config(args: argparse.Namespace, host):
    import dataclasses

    from azprov.config import load_config

    overrides: dict = {}
    if getattr(args, "wireserver", None):
        overrides["wireserver"] = {"address": args.wireserver}
    if getattr(args, "imds", None):
        overrides["imds"] = {"address": args.imds}
    if getattr(args, "protocol", None):
        overrides["health"] = {"protocol": args.protocol}
    config = load_config(host, config_file=args.config, overrides=overrides)
    timeout = getattr(args, "timeout", None)
    if timeout:
        config = dataclasses.replace(
            config,
            wireserver=dataclasses.replace(config.wireserver, deadline=min(config.wireserver.deadline, timeout)),
            imds=dataclasses.replace(config.imds, deadline=min(config.imds.deadline, timeout)),
        )
    return config


def _handler(reference: str):
    module_name, _, function = reference.partition(":")
    return getattr(importlib.import_module(module_name), function)


def _json_words(words: List[str]) -> bool:
    """``--json`` is on the command line (before a ``--``), whether or not it parsed."""
    return "--json" in (words[:words.index("--")] if "--" in words else words)


def _fail(as_json: bool, message: str, reason: Optional[str], code: int, *, say: bool = True) -> int:
    if say:
        print(f"azprov: {message}", file=sys.stderr)
    if as_json:
        try:
            print(json.dumps(failure_object(message, reason, code)), flush=True)
        except BrokenPipeError:
            pass
    return int(code)


def _refuse_without_root(args: argparse.Namespace) -> None:
    """``must run as root`` before anything is read or sent (exit 9)."""
    why = NEEDS_ROOT.get(args.command)
    if why is None or os.geteuid() == 0 or getattr(args, "self_test", False):
        return
    raise NotRoot(f"azprov {args.command} must run as root, because {why}; nothing was read or "
                  "sent: run it with sudo")


def main(argv: Optional[List[str]] = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    as_json = _json_words(words)
    try:
        args = build_parser(only=_selected_command(words)).parse_args(words)
    except UsageError as error:  # exit 2, argparse's usage and message on stderr
        error.parser.print_usage(sys.stderr)
        print(f"{error.parser.prog}: error: {error}", file=sys.stderr)
        return _fail(as_json, str(error), None, ExitCode.USAGE, say=False)
    as_json = bool(getattr(args, "json", False))
    try:
        _refuse_without_root(args)
    except NotRoot as error:
        return _fail(as_json, str(error), error.reason, error.exit_code)
    from azprov.log import setup_logging

    destination = setup_logging(args.verbose, console=args.command == "provision")
    try:
        from azprov.host import Host

        host = Host(getattr(args, "root", "/"))  # the one Host of this run
        # check and status read the image's configuration themselves: a broken one is a problem
        # they list (status describes it; it needs no configuration of its own)
        config = None if args.command in ("check", "status") else _load_config(args, host)
        return int(_handler(args.handler)(args, config, host))
    except AzprovError as error:
        said = destination == "journal" and getattr(error, "logged", False)  # said once in the journal
        return _fail(as_json, str(error), error.reason, error.exit_code, say=not said)
    except KeyboardInterrupt:
        return _fail(as_json, "interrupted", None, 130)
    except BrokenPipeError:
        return int(ExitCode.OK)
    except Exception as error:  # a bug: say so plainly, keep the traceback in the log
        log.exception("internal error")
        return _fail(as_json, f"internal error ({type(error).__name__}: {error}); "
                     "this is a bug, please report it with the log", InternalError.reason, ExitCode.FAILURE)
