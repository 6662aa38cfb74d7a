"""SSH keys: ``compute.publicKeys`` into the admin user's authorized keys, where sshd reads them.

Each key is validated as one OpenSSH public key line, ``type base64 [comment]``: trailing CR/LF
stripped, any other line break or control character refused (a key can never smuggle a second
line), no options (IMDS keys never carry ``command=``...), a known type, base64 that decodes to a
blob naming the same type, at most 16 KiB, at most 1000 keys.

The key data must be a key sshd can use: the blob is parsed field by field (an ed25519 key has
its 32 key bytes, an RSA modulus has at least 1024 bits, an ECDSA point is on the named curve's
size); ``ssh-ed448`` (no OpenSSH supports it) is refused, and a lone ``ssh-dss`` key (refused by
default since OpenSSH 7.0) is a warning.

The file is the first ``AuthorizedKeysFile`` of sshd's configuration that belongs to this user
(``%h``/``%u``/``%U`` in it, or relative to the home; default ``.ssh/authorized_keys``).  A file
sshd reads for every account (an absolute path without a token) is never written: a key there
would log in as anyone.  An IMDS ``path`` is honoured only when it is one of the user's
authorized-keys files; any other path (``.bashrc``, another user's file) is ignored with a warning.

Keys are merged with the file's lines: existing lines kept, except that a line holding one of the
keys behind options (``command=``, ``restrict``...) is replaced by the plain key, so the owner
gets a shell.  The file is 0600, the user's, written atomically; a hard-linked file is refused.
Directories on the way are judged as sshd's ``StrictModes`` does and never changed: only the
directories azprov creates (0700 below the home) become the user's.  The walk is
:meth:`azprov.host.Host.update_account_file`: every component opened with ``O_NOFOLLOW`` from the
root down, so a symlinked ``.ssh`` fails the step instead of being written through.  All of it is
checked before any step changes anything.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import struct
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

from azprov.errors import InvalidKey, NoAuthorizedKeysFile, StepFailed, UnsafePath
from azprov.host import NO_UID, Host, PasswdEntry, inside
from azprov.host import sshd_config
from azprov.steps import user as user_step

log = logging.getLogger(__name__)

NAME = "ssh_keys"
MAX_KEY_LENGTH = 16 * 1024
MAX_KEYS = 1000
KEY_TYPES = frozenset({
    "ssh-rsa", "ssh-dss", "ssh-ed25519",
    "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-rsa-cert-v01@openssh.com", "ssh-dss-cert-v01@openssh.com",
    "ssh-ed25519-cert-v01@openssh.com",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com", "ecdsa-sha2-nistp384-cert-v01@openssh.com",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com",
    "sk-ssh-ed25519-cert-v01@openssh.com", "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com",
})
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _has_line_breaking(text: str) -> bool:
    """Characters some reader would take for a line end or a control: C0/C1 controls, line and
    paragraph separators, lone surrogates (tabs are plain whitespace)."""
    import unicodedata

    return any(c != "\t" and unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") for c in text)


def parse_key(key_data: str, index: int = 0) -> Tuple[str, str, str]:
    """``(type, base64, comment)`` of one IMDS key, or InvalidKey saying what is wrong."""
    where = {"key_index": index}
    text = key_data.rstrip("\r\n")
    if len(text) > MAX_KEY_LENGTH:
        raise InvalidKey(f"SSH key {index} is {len(text)} characters, over {MAX_KEY_LENGTH}", **where)
    if "\n" in text or "\r" in text:
        raise InvalidKey(f"SSH key {index} contains a line break: one key per entry, one line each",
                         **where)
    if _CONTROL.search(text) or _has_line_breaking(text):
        raise InvalidKey(f"SSH key {index} contains control characters or line separators", **where)
    fields = text.replace("\t", " ").strip(" ").split(None, 2)
    if not fields:
        raise InvalidKey(f"SSH key {index} is empty", **where)
    key_type = fields[0]
    if key_type not in KEY_TYPES:
        if "=" in key_type or "," in key_type or key_type.startswith(("command", "from", "no-")):
            raise InvalidKey(f"SSH key {index} starts with options ({key_type[:40]!r}); "
                             "azprov accepts plain public keys only", **where)
        raise InvalidKey(f"SSH key {index} has an unknown key type {key_type[:60]!r}", **where)
    if len(fields) < 2:
        raise InvalidKey(f"SSH key {index} ({key_type}) has no key data", **where)
    blob_text = fields[1]
    try:
        blob = base64.b64decode(blob_text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidKey(f"SSH key {index} ({key_type}): the key data is not valid base64",
                         **where) from None
    if len(blob) < 4:
        raise InvalidKey(f"SSH key {index} ({key_type}): the key data is truncated", **where)
    (length,) = struct.unpack(">I", blob[:4])
    if blob[4:4 + length].decode("ascii", "replace") != key_type or length + 4 > len(blob):
        raise InvalidKey(f"SSH key {index}: the key data is not a {key_type} key", **where)
    problem = blob_problem(key_type, blob)
    if problem:
        raise InvalidKey(f"SSH key {index} ({key_type}): {problem}; sshd could not use it", **where)
    comment = fields[2].strip() if len(fields) > 2 else ""
    return key_type, blob_text, comment


_EC_POINT = {"nistp256": 65, "nistp384": 97, "nistp521": 133}
RSA_MIN_BITS = 1024  # OpenSSH's SSH_RSA_MINIMUM_MODULUS_SIZE


def _fields(blob: bytes) -> Optional[List[bytes]]:
    """The length-prefixed strings of a public key blob, or None if it does not split into them."""
    fields = []
    offset = 0
    while offset < len(blob):
        if offset + 4 > len(blob):
            return None
        (length,) = struct.unpack(">I", blob[offset:offset + 4])
        offset += 4
        if offset + length > len(blob):
            return None
        fields.append(blob[offset:offset + length])
        offset += length
    return fields


def _mpint_bits(value: bytes) -> int:
    return int.from_bytes(value, "big", signed=True).bit_length() if value else 0


def blob_problem(key_type: str, blob: bytes) -> str:
    """What makes ``blob`` a key sshd cannot use, or "" (certificates: the type only)."""
    if "-cert-v01@" in key_type:
        return ""
    fields = _fields(blob)
    if fields is None:
        return "the key data is cut short"
    body = fields[1:]
    if key_type in ("ssh-ed25519", "sk-ssh-ed25519@openssh.com"):
        wanted = 1 if key_type == "ssh-ed25519" else 2
        if len(body) != wanted or len(body[0]) != 32:
            return "an ed25519 key has exactly 32 key bytes"
    elif key_type == "ssh-rsa":
        if len(body) != 2 or _mpint_bits(body[0]) < 2:
            return "not an RSA public key (exponent, modulus)"
        if _mpint_bits(body[1]) < RSA_MIN_BITS:
            return f"an RSA modulus of {_mpint_bits(body[1])} bits, under sshd's {RSA_MIN_BITS}"
    elif key_type == "ssh-dss":
        if len(body) != 4 or not all(body):
            return "not a DSA public key (p, q, g, y)"
    elif key_type.startswith(("ecdsa-sha2-", "sk-ecdsa-sha2-")):
        curve = key_type.split("-")[-1].split("@")[0]
        wanted = 2 if key_type.startswith("ecdsa") else 3
        if len(body) != wanted or body[0].decode("ascii", "replace") != curve:
            return f"not an ECDSA key on {curve}"
        if len(body[1]) != _EC_POINT.get(curve, -1) or body[1][:1] != b"\x04":
            return f"the ECDSA point is not an uncompressed {curve} point"
    return ""


def validate(public_keys) -> List[Tuple[str, str, str]]:
    if len(public_keys) > MAX_KEYS:
        raise InvalidKey(f"{len(public_keys)} SSH keys, over the limit of {MAX_KEYS}")
    keys = [parse_key(key.key_data, index) for index, key in enumerate(public_keys)]
    if keys and all(key_type.startswith(("ssh-dss", "ssh-dss-")) for key_type, _, _ in keys):
        log.warning("the only SSH key%s DSA (ssh-dss): OpenSSH refuses DSA keys by default since "
                    "7.0, so this VM may have no working SSH login", " is" if len(keys) == 1 else "s are")
    return keys




def enabled(settings) -> bool:
    return settings.install_ssh_keys


def check(host: Host, metadata, settings) -> None:
    """Everything ``apply`` would refuse, refused before any step changes anything."""
    host.accounts.admin_name(metadata.os_profile.admin_username)  # never a system account's keys
    validate(metadata.public_keys)
    if not metadata.public_keys:
        return
    account = user_step.account(host, metadata.os_profile.admin_username)
    for path in target_files(host, account, metadata.public_keys):
        host.check_account_file(account, path)
        if account.uid == NO_UID and inside(path, account.home):
            _check_skel(host, account, path)


def _check_skel(host: Host, account: PasswdEntry, path: str) -> None:
    """``useradd -m`` copies the skeleton into a new home, symlinks and modes included: what it
    would put on the way to the keys file must be what sshd and azprov accept."""
    skel = host.accounts.useradd_defaults().get("SKEL") or "/etc/skel"
    if not skel.startswith("/"):
        return
    relative = os.path.relpath(path, account.home)
    skeleton = PasswdEntry(account.name, 0, 0, os.path.normpath(skel), account.shell)
    try:
        host.check_account_file(skeleton, os.path.join(skeleton.home, relative))
    except UnsafePath as exc:
        raise UnsafePath(f"useradd would copy it into {account.name}'s new home: {exc}",
                         **exc.details) from None


def _key_of(line: str) -> Tuple[Optional[str], bool]:
    """``(base64 key, has options)`` of an authorized_keys line; ``(None, False)`` for comments
    and lines without a known key type."""
    words = line.split()
    if not words or words[0].startswith("#"):
        return None, False
    for index, word in enumerate(words[:-1]):
        if word in KEY_TYPES:
            return words[index + 1], index > 0
    return None, False


def merge(existing: str, keys: List[Tuple[str, str, str]]) -> str:
    """``existing`` lines kept as they are, followed by the keys it lacks (matched by key data);
    a line holding one of ``keys`` behind options (``command=``...) becomes the plain key."""
    wanted = OrderedDict((blob, " ".join(part for part in (key_type, blob, comment) if part))
                         for key_type, blob, comment in keys)
    lines: List[str] = []
    present = set()
    for line in existing.splitlines():
        if not line.strip():
            continue
        blob, options = _key_of(line)
        if blob in wanted:
            if blob in present:
                continue  # a second line for the same key: the first one decides, drop it
            if options:
                log.warning("authorized_keys had an IMDS key behind options (%s...): replaced by "
                            "the plain key so its owner gets a shell", line.split()[0][:40])
                line = wanted[blob]
            present.add(blob)
        lines.append(line)
    lines.extend(text for blob, text in wanted.items() if blob not in present)
    return "".join(line + "\n" for line in lines)


def target_files(host: Host, user: PasswdEntry, public_keys) -> Dict[str, List[int]]:
    """``{authorized_keys path: [key indexes]}``: where sshd reads this user's keys; an IMDS
    path is honoured only when it is one of those files."""
    mine, shared = sshd_config.user_authorized_keys_files(host, home=user.home, user=user.name,
                                                          uid=user.uid)
    if not mine:
        where = ", ".join(shared) if shared else "none"
        raise NoAuthorizedKeysFile(
            f"sshd's AuthorizedKeysFile names no file of {user.name} ({where}): keys installed "
            "anywhere would not log in, or would log in as every user", authorized_keys_file=where)
    matched: list = []
    sshd_config.directives(host, matched=matched)
    for directive in matched:
        if directive.keyword == "authorizedkeysfile":
            log.warning("%s line %d sets AuthorizedKeysFile inside a Match block (%s): if it "
                        "applies to %s, sshd reads keys there, not in %s", directive.source,
                        directive.line, directive.value[:100], user.name, mine[0])
    targets: Dict[str, List[int]] = OrderedDict()
    for index, key in enumerate(public_keys):
        path = mine[0]
        if key.path:
            wanted = os.path.normpath(key.path) if key.path.startswith("/") else None
            if wanted in mine and ".." not in key.path.split("/"):
                path = wanted
            elif wanted != path:
                log.warning("SSH key %d: path %r is not an authorized-keys file of %s; using %s",
                            index, key.path[:200], user.name, path)
        targets.setdefault(path, []).append(index)
    return targets


def apply(host: Host, metadata, settings) -> bool:
    keys = validate(metadata.public_keys)
    username = host.accounts.admin_name(metadata.os_profile.admin_username)
    user = host.accounts.user(username)
    if user is None:
        raise StepFailed(f"user {username} does not exist: cannot install its SSH keys",
                         admin_username=username)
    if not keys:
        log.warning("IMDS lists no SSH public keys for %s: nothing to install", username)
        return False
    changed = False
    for path, indexes in target_files(host, user, metadata.public_keys).items():
        changed = install(host, user, path, [keys[i] for i in indexes]) or changed
    return changed


def install(host: Host, user: PasswdEntry, path: str, keys: List[Tuple[str, str, str]]) -> bool:
    """Merge ``keys`` into ``path``, the user's 0600 file (see :meth:`Host.update_account_file`)."""
    changed, created = host.update_account_file(
        user, path, lambda data: merge(data.decode("utf-8", "replace") if data else "", keys).encode())
    if changed:
        log.info("installed %d SSH key(s) for %s in %s", len(keys), user.name, path)
        _restorecon(host, created[0] if created else path)
    return changed


def _restorecon(host: Host, path: str) -> None:
    if host.probes.selinux_enabled() and host.which("restorecon"):
        host.run(["restorecon", "-R", path], timeout=60, check=False)
