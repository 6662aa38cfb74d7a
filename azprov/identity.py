"""VM identity: the DMI product UUID (with the Gen1 byte swap) and IMDS ``vmId``.

On Generation 1 (BIOS) Hyper-V VMs the SMBIOS UUID's first three fields are stored
little-endian, so ``/sys/class/dmi/id/product_uuid`` reads as the byte-swapped form of the
``vmId`` that IMDS reports.  Generation 2 (UEFI) VMs, recognised by ``/sys/firmware/efi``, read the
same value as IMDS.  Comparisons accept either form, so a mistaken generation guess never makes a
provisioned VM look new.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from azprov.errors import ProtocolError, StepFailed

if TYPE_CHECKING:
    from azprov.host import Host

log = logging.getLogger(__name__)

PRODUCT_UUID = "sys/class/dmi/id/product_uuid"
EFI_DIR = "sys/firmware/efi"
_READ_LIMIT = 256  # bytes: a UUID and a newline fit many times over

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_NOT_AN_ID = {"00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff"}


def normalize_vm_id(value: str) -> str:
    """``value`` as a lower-case canonical UUID string (8-4-4-4-12 hex digits).

    Surrounding whitespace is ignored.  Anything else, including the all-zero and all-F UUIDs
    that broken firmware reports, raises :class:`~azprov.errors.ProtocolError`.
    """
    if not isinstance(value, str):
        raise ProtocolError(f"VM id is a {type(value).__name__}, not a UUID string")
    text = value.strip().lower()
    if not _UUID.match(text):
        shown = repr(value[:64] + ("..." if len(value) > 64 else ""))
        raise ProtocolError(
            f"VM id {shown} is not a UUID (expected 8-4-4-4-12 hexadecimal digits)"
        )
    if text in _NOT_AN_ID:
        raise ProtocolError(f"VM id {text} is a placeholder, not a VM id")
    return text


def gen1_swap(vm_id: str) -> str:
    """The other byte order of ``vm_id``: first three fields reversed (its own inverse).

    ``527c2691-029f-fe4c-b1f4-a4da7ebac2cf`` <-> ``91267c52-9f02-4cfe-b1f4-a4da7ebac2cf``.
    """
    first, second, third, *rest = normalize_vm_id(vm_id).split("-")
    return "-".join([bytes.fromhex(part)[::-1].hex() for part in (first, second, third)] + rest)


def same_vm_id(a: Optional[str], b: Optional[str]) -> bool:
    """True if ``a`` and ``b`` name the same VM, directly or through the Gen1 swap.

    None or an invalid id never matches anything.
    """
    if a is None or b is None:
        return False
    try:
        first, second = normalize_vm_id(a), normalize_vm_id(b)
    except ProtocolError:
        return False
    return first == second or first == gen1_swap(second)


def read_dmi_vm_id(host: "Host") -> Optional[str]:
    """The VM id from ``<root>/sys/class/dmi/id/product_uuid`` in IMDS ``vmId`` form, or None.

    Without ``<root>/sys/firmware/efi`` (a Gen1 VM) the value is byte-swapped.  A missing,
    unreadable (the file is root-only) or invalid file gives None and a log line.  Links resolve
    inside the host's root.
    """
    path = host.path("/" + PRODUCT_UUID)
    try:
        raw = host.read("/" + PRODUCT_UUID, follow=True, limit=_READ_LIMIT)
    except OSError as exc:
        log.warning("cannot read the DMI product UUID %s: %s", path, exc.strerror or exc)
        return None
    except StepFailed as exc:  # not a regular file, or too long for a UUID
        log.warning("ignoring the DMI product UUID in %s: %s", path, exc)
        return None
    if raw is None:
        log.debug("no DMI product UUID at %s", path)
        return None
    try:
        vm_id = normalize_vm_id(raw.decode("ascii"))
    except (UnicodeDecodeError, ProtocolError) as exc:
        log.warning("ignoring the DMI product UUID in %s: %s", path, exc)
        return None
    if not host.is_dir("/" + EFI_DIR):
        vm_id = gen1_swap(vm_id)  # Gen1 (BIOS): little-endian fields
    return vm_id


@dataclass(frozen=True)
class VmId:
    """The VM id a run provisions, and where it came from (``dmi`` or ``imds``)."""

    value: str
    source: str


def settle(dmi_id: Optional[str], imds_id: str) -> VmId:
    """The VM id of this run, decided once the metadata is known: DMI's when there is one (a
    warning when IMDS names another VM), else IMDS's."""
    if dmi_id is None:
        return VmId(normalize_vm_id(imds_id), "imds")
    if not same_vm_id(dmi_id, imds_id):
        log.warning("DMI says VM %s, IMDS says %s: using the DMI id", dmi_id, imds_id)
    return VmId(dmi_id, "dmi")
