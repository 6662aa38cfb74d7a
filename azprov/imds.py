"""The Instance Metadata Service: what the VM's owner asked for.

``parse_metadata`` turns the instance document into typed values and checks its *shape*
(types, sizes); whether a computer name, user name or key is acceptable is decided by the step
that applies it.  ``ImdsClient`` fetches the document through the shared HTTP policy.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from dataclasses import dataclass, field
from typing import Optional, Tuple

from azprov.errors import HttpStatusError, ProtocolError

log = logging.getLogger(__name__)

IMDS_MAX_BYTES = 4 * 1024 * 1024
MAX_PUBLIC_KEYS = 1000
API_VERSION = "2021-08-01"
FALLBACK_API_VERSION = "2019-06-01"
INSTANCE_PATH = "/metadata/instance"


@dataclass(frozen=True)
class PublicKey:
    """An SSH public key from IMDS, and where it should be installed."""

    key_data: str
    path: str = ""


@dataclass(frozen=True)
class OsProfile:
    """The ``osProfile`` fields azprov uses."""

    computer_name: str
    admin_username: str
    disable_password_authentication: bool


@dataclass(frozen=True)
class Metadata:
    """What azprov uses of the IMDS instance metadata."""

    vm_id: str
    name: str  # the resource name (not the hostname: that is os_profile.computer_name)
    os_profile: Optional[OsProfile]  # None: the VM was created without one (specialized disk)
    public_keys: Tuple[PublicKey, ...] = ()
    pps_type: Optional[str] = None  # pre-provisioned pool type; None or "None" is a normal VM
    api_version: str = API_VERSION
    user_data: Optional[bytes] = field(default=None, repr=False)  # compute.userData, decoded
    has_custom_data: bool = False  # extended.compute.hasCustomData
    # From the provisioning disc (azprov.sources.combine), never from IMDS:
    password: Optional[str] = field(default=None, repr=False)
    custom_data: Optional[bytes] = field(default=None, repr=False)

    @property
    def is_pool_vm(self) -> bool:
        return self.pps_type not in (None, "", "None")


def _get(mapping: object, key: str, kind: type, where: str, required: bool = True):
    if not isinstance(mapping, dict):
        raise ProtocolError(f"IMDS document: {where} is not an object")
    value = mapping.get(key)
    if value is None:
        if required:
            raise ProtocolError(f"IMDS document has no {where}.{key}")
        return None
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ProtocolError(
            f"IMDS document: {where}.{key} is {type(value).__name__}, expected {kind.__name__}"
        )
    return value


def _flag(value: object, where: str) -> bool:
    """``disablePasswordAuthentication`` is the string "true"/"false"; accept a bool too."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ProtocolError(f"IMDS document: {where} is {value!r}, expected true or false")


def parse_metadata(body: bytes, api_version: str = API_VERSION) -> Metadata:
    """Parse the instance document, or raise :class:`ProtocolError` saying what is wrong."""
    if len(body) > IMDS_MAX_BYTES:
        raise ProtocolError(f"IMDS document is {len(body)} bytes, over {IMDS_MAX_BYTES}")
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"IMDS document is not valid JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError("IMDS document is not valid JSON: nested too deeply") from None
    compute = _get(document, "compute", dict, "document")
    vm_id = _get(compute, "vmId", str, "compute").strip()
    name = _get(compute, "name", str, "compute", required=False) or ""

    os_profile = None
    profile = _get(compute, "osProfile", dict, "compute", required=False)
    if profile:  # an empty object is as good as none
        computer_name = _get(profile, "computerName", str, "compute.osProfile")
        admin_username = _get(profile, "adminUsername", str, "compute.osProfile")
        raw_flag = profile.get("disablePasswordAuthentication", "true")
        os_profile = OsProfile(
            computer_name,
            admin_username,
            _flag(raw_flag, "compute.osProfile.disablePasswordAuthentication"),
        )

    raw_keys = _get(compute, "publicKeys", list, "compute", required=False) or []
    if len(raw_keys) > MAX_PUBLIC_KEYS:
        raise ProtocolError(f"IMDS document has {len(raw_keys)} public keys, over {MAX_PUBLIC_KEYS}")
    keys = []
    for index, entry in enumerate(raw_keys):
        where = f"compute.publicKeys[{index}]"
        keys.append(
            PublicKey(
                _get(entry, "keyData", str, where),
                _get(entry, "path", str, where, required=False) or "",
            )
        )

    pps_type = None
    has_custom_data = False
    extended = _get(document, "extended", dict, "document", required=False)
    if extended:
        extended_compute = _get(extended, "compute", dict, "extended", required=False) or {}
        pps_type = _get(extended_compute, "ppsType", str, "extended.compute", required=False)
        raw_flag = extended_compute.get("hasCustomData")
        if raw_flag is not None:
            has_custom_data = _flag(raw_flag, "extended.compute.hasCustomData")
    user_data = _user_data(_get(compute, "userData", str, "compute", required=False))
    return Metadata(vm_id, name, os_profile, tuple(keys), pps_type, api_version,
                    user_data=user_data, has_custom_data=has_custom_data)


def _user_data(text: Optional[str]) -> Optional[bytes]:
    """``compute.userData``: base64 (whitespace allowed); empty means none."""
    if not text or not text.strip():
        return None
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("IMDS document: compute.userData is not base64") from None


class ImdsClient:
    """Fetches the instance document with ``Metadata: true``, never through a proxy."""

    def __init__(self, base_url: str, http, policy) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = http
        self.policy = policy

    def _fetch(self, query: str, deadline) -> bytes:
        response = self.http.request(
            "GET",
            f"{self.base_url}{INSTANCE_PATH}?{query}",
            policy=self.policy,
            headers={"Metadata": "true"},
            max_bytes=IMDS_MAX_BYTES,
            what="IMDS instance metadata",
            request_id=True,
            deadline=deadline,
        )
        return response.body

    def deadline(self):
        """A fresh deadline for the IMDS phase (:meth:`metadata` makes its own without one)."""
        return self.http.deadline(self.policy)

    def metadata(self, deadline=None) -> Metadata:
        """The instance metadata; falls back to the older API version on HTTP 400.

        Both requests share one deadline: the IMDS phase never takes longer than configured.
        A caller that passes its own ``deadline`` may end it early (``Deadline.end()``) to stop
        the retries.
        """
        deadline = deadline or self.deadline()
        try:
            body = self._fetch(f"api-version={API_VERSION}&extended=true", deadline)
            return parse_metadata(body, API_VERSION)
        except HttpStatusError as exc:
            if exc.status != 400:
                raise
        log.info("IMDS does not know api-version %s; asking with %s", API_VERSION, FALLBACK_API_VERSION)
        body = self._fetch(f"api-version={FALLBACK_API_VERSION}", deadline)
        return parse_metadata(body, FALLBACK_API_VERSION)
