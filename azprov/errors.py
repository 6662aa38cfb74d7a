"""azprov's errors: one base class, a short fixed reason each.

Every module raises these and nothing else for expected failures; the CLI turns them into one
line on stderr and a documented exit code, and the provisioning flow encodes them into the
``NotReady/ProvisioningFailed`` health report.

This module is also the catalogue of failure reasons: every error class of azprov is defined
here, and :func:`reasons` lists their ``reason`` tokens.  To add a reason:

1. add a class here, under the family it belongs to, for example::

       class InvalidPassword(InvalidMetadata):
           reason = "invalid_admin_password"

2. add its row to the FAILURE REASONS table of ``docs/azprov.8``.

``tests/test_errors.py`` fails while a reason is used twice, is missing from the man page, or an
error class of azprov is defined outside this module.

The reports that carry an error to Azure are built by :mod:`azprov.report`.  This module imports
nothing of azprov.
"""

from __future__ import annotations

import enum
from typing import Dict, Optional

DESCRIPTION_LIMIT = 512
DOCUMENTATION_URL = "https://aka.ms/linuxprovisioningerror"


class ExitCode(enum.IntEnum):
    """Exit codes of every azprov command (documented in README.md and azprov(8))."""

    OK = 0
    FAILURE = 1  # unexpected internal error (a bug): traceback in the log
    USAGE = 2  # bad command line (argparse)
    CONFIG = 3  # configuration file unreadable or invalid
    UNREACHABLE = 4  # the fabric (WireServer/IMDS) did not answer usefully before the deadline
    PROTOCOL = 5  # the fabric answered with something invalid, or refused a request
    PROVISIONING = 6  # a provisioning step failed (ProvisioningFailed was reported if possible)
    REFUSED = 7  # azprov refused to provision this VM (another provisioner, pool VM, ...)
    BUSY = 8  # another azprov instance holds the lock
    NOT_ROOT = 9  # a command that needs root run without it: refused before anything was read or sent
    NOT_READY = 10  # azprov check: an image captured now would not provision (problems listed); fabric boot: it did not


class AzprovError(Exception):
    """Base of azprov's expected failures.

    ``reason`` is a short fixed token (``snake_case``) for reports and scripts; the message is
    the human sentence; ``details`` are extra ``key=value`` pairs for the failure report.  No
    secret may ever be put in either.
    """

    reason = "error"
    exit_code = ExitCode.FAILURE

    def __init__(self, message: str, /, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = {k: v for k, v in details.items() if v is not None}

    def __str__(self) -> str:
        return self.message

    def failure_object(self) -> dict:
        """What ``--json`` prints on stdout for this failure (see :func:`failure_object`)."""
        return failure_object(self.message, self.reason, self.exit_code)


def failure_object(message: str, reason: Optional[str], exit_code: int) -> dict:
    """What ``--json`` prints on stdout for a failure: the message, the reason token (None when
    the failure has none: a bad command line, an interruption) and the exit code."""
    return {"error": message, "reason": reason, "exit_code": int(exit_code)}


class ConfigError(AzprovError):
    reason = "invalid_config"
    exit_code = ExitCode.CONFIG


class FabricUnreachable(AzprovError):
    """No usable answer before the phase deadline (connection errors, timeouts, retried statuses)."""

    reason = "fabric_unreachable"
    exit_code = ExitCode.UNREACHABLE


class HttpStatusError(AzprovError):
    """The fabric answered with a status that is not retried (see ``azprov.http``)."""

    reason = "http_error"
    exit_code = ExitCode.PROTOCOL

    def __init__(self, message: str, status: int, /, **details: object) -> None:
        super().__init__(message, **{**details, "status": status})
        self.status = status


class ProtocolError(AzprovError):
    """A fabric response that cannot be used: malformed, hostile, oversized or incomplete."""

    reason = "invalid_fabric_response"
    exit_code = ExitCode.PROTOCOL


class InvalidGoalState(ProtocolError):
    """A goal state azprov refuses (an incarnation that is not a number, an implausible id) whose
    three values can still be echoed: ``echo`` is the goal state to report the failure for."""

    reason = "invalid_goal_state"

    def __init__(self, message: str, /, echo: object = None, **details: object) -> None:
        super().__init__(message, **details)
        self.echo = echo


class InvalidMetadata(AzprovError):
    """A value from IMDS that azprov will not apply (bad hostname, user name, SSH key...)."""

    reason = "invalid_metadata"
    exit_code = ExitCode.PROVISIONING


class StepFailed(AzprovError):
    """A provisioning step could not be carried out on this host."""

    reason = "provisioning_step_failed"
    exit_code = ExitCode.PROVISIONING


class FirewallFailed(StepFailed):
    """The WireServer rule (root only) could not be set: nft or iptables failed.  After Ready
    it is only logged as a warning; ``azprov firewall`` exits with it."""

    reason = "firewall_failed"


class UnusableHome(StepFailed):
    """The admin user's home is not a place azprov can make a working login of: outside the usual
    place (``/home``), missing from ``/etc/passwd``, a symlink, or owned by someone else."""

    reason = "unusable_home"


class NoAuthorizedKeysFile(StepFailed):
    """sshd's ``AuthorizedKeysFile`` names no file of the admin user (``none``, or only files
    shared by every account): keys installed anywhere would not log anyone in, or everyone."""

    reason = "no_authorized_keys_file"


class SshdPolicyOverridden(StepFailed):
    """The image's sshd configuration sets ``PasswordAuthentication`` before azprov's drop-in
    is read (an earlier drop-in, ``sshd_config`` itself, or no Include), to another value."""

    reason = "sshd_password_policy_overridden"


class Refused(AzprovError):
    """azprov will not provision this VM (another provisioner, a pool VM, no osProfile)."""

    reason = "provisioning_refused"
    exit_code = ExitCode.REFUSED


class Busy(AzprovError):
    reason = "already_running"
    exit_code = ExitCode.BUSY


# -- the reasons, by family ----------------------------------------------------------------

class InternalError(AzprovError):
    """An unexpected exception (a bug) during provisioning, reported instead of a traceback."""

    reason = "internal_error"


class ReportedByHand(AzprovError):
    """``azprov report-failure``: the image's own script reported the failure."""

    reason = "reported_by_hand"


class NotRoot(AzprovError):
    """A command that changes the system, or reads what only root may read, run without root:
    refused before anything is read or sent."""

    reason = "must_run_as_root"
    exit_code = ExitCode.NOT_ROOT


class NotReadyForCapture(AzprovError):
    """``azprov check`` found problems: an image captured now would not provision.  check does
    not raise it; its ``--json`` object carries this reason with the problems."""

    reason = "not_ready_for_capture"
    exit_code = ExitCode.NOT_READY


class ImageWouldNotProvision(AzprovError):
    """``azprov fabric boot``: the image, booted against the emulator, did not provision (no
    accepted Ready, a NotReady, no SSH login with the key, or the wrong host name)."""

    reason = "image_would_not_provision"
    exit_code = ExitCode.NOT_READY


class VmUnavailable(AzprovError):
    """``azprov fabric boot`` cannot boot a VM here: QEMU or its helpers are not installed, or the
    image cannot be opened."""

    reason = "vm_unavailable"
    exit_code = ExitCode.CONFIG


class ConfirmationRequired(AzprovError):
    """``azprov deprovision`` without ``--force`` and not on a terminal."""

    reason = "confirmation_required"
    exit_code = ExitCode.USAGE


class ScenarioError(ConfigError):
    """A fabric emulator scenario that cannot be played as written."""

    reason = "invalid_scenario"


class MissingRoleInstance(ProtocolError):
    """The goal state has no RoleInstance yet: transient at boot, fetch again."""

    reason = "goal_state_without_role_instance"


class InvalidHostname(InvalidMetadata):
    reason = "invalid_computer_name"


class InvalidUsername(InvalidMetadata):
    reason = "invalid_admin_username"


class InvalidKey(InvalidMetadata):
    reason = "invalid_ssh_key"


class PasswordTooLong(InvalidMetadata):
    """The admin password from the provisioning disc is over Azure's 72 characters."""

    reason = "password_too_long"


class InvalidPassword(InvalidMetadata):
    """The admin password from the provisioning disc has control characters or line breaks."""

    reason = "invalid_password"


class IncompleteDisc(InvalidMetadata):
    """IMDS did not answer and the provisioning disc lacks the HostName or UserName."""

    reason = "provisioning_media_incomplete"


class InvalidOvfEnv(ProtocolError):
    """The provisioning disc's ovf-env.xml cannot be used."""

    reason = "invalid_ovf_env"


class NoWayToLogIn(StepFailed):
    """No SSH key and no password: nobody could log in to the VM."""

    reason = "no_way_to_log_in"


class CustomDataMissing(StepFailed):
    """IMDS says the VM has custom data but no provisioning disc carried it."""

    reason = "custom_data_missing"


class UnsafePath(StepFailed):
    """A path azprov must write through is a symlink, not a directory, or wrongly owned."""

    reason = "unsafe_path"


class CommandFailed(StepFailed):
    reason = "command_failed"


class DiscUnreadable(StepFailed):
    """A provisioning disc is there but neither the readers nor a mount could read it."""

    reason = "provisioning_media_unreadable"


class TempDiskFailed(StepFailed):
    """The temporary disk was to be formatted or mounted (``azprov temp-disk``) and that failed:
    mkfs, mount or the swap file.  A disk left alone because it holds data is not a failure."""

    reason = "temp_disk_failed"


class OtherProvisioner(Refused):
    reason = "other_provisioner_active"


class PoolVm(Refused):
    reason = "pre_provisioned_pool_vm"


class NoOsProfile(Refused):
    reason = "no_os_profile"


# Bases that are only raised through a subclass: their reason is never sent by itself.
FAMILY_REASONS = frozenset({AzprovError.reason, InvalidMetadata.reason, Refused.reason})


def reasons() -> Dict[str, type]:
    """Every failure reason azprov can send or print, mapped to its error class."""
    found: Dict[str, type] = {}
    pending = [AzprovError]
    while pending:
        cls = pending.pop(0)
        found.setdefault(cls.reason, cls)
        pending.extend(cls.__subclasses__())
    return found
