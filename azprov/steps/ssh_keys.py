"""SSH keys: ``compute.publicKeys`` into the admin user's authorized keys, where sshd reads them.

Each key is validated as one OpenSSH public key line, ``type base64 [comment]``: trailing CR/LF
stripped, any other line break or control character refused (a key can never smuggle a second
line), no options (IMDS keys never carry ``command=``...), a known type, base64 that decodes to a
blob naming the same type, at most 16 KiB, at most 1000 keys.

The file is the first ``AuthorizedKeysFile`` of sshd's configuration (``%h``/``%u``/``%%``
expanded, relative to the home; default ``.ssh/authorized_keys``); an IMDS ``path`` is honoured
only inside the user's home.  Keys are merged with the file's lines (no duplicates, existing lines
kept), the directories below the home are 0700 and the file 0600, owned by the user, written
atomically.  Every path component is opened with ``O_NOFOLLOW`` from the root down: a symlinked
``.ssh`` (to ``/root/.ssh``, say) fails the step instead of being written through.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import stat
import struct
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

from azprov.errors import InvalidKey, StepFailed, UnsafePath
from azprov.host import Dir, Host, PasswdEntry, split_path
from azprov.steps import sshd_config
from azprov.steps import user as user_step

log = logging.getLogger(__name__)

NAME = "ssh_keys"
MAX_KEY_LENGTH = 16 * 1024
MAX_KEYS = 1000
KEY_TYPES = frozenset({
    "ssh-rsa", "ssh-dss", "ssh-ed25519", "ssh-ed448",
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
    comment = fields[2].strip() if len(fields) > 2 else ""
    return key_type, blob_text, comment


def validate(public_keys) -> List[Tuple[str, str, str]]:
    if len(public_keys) > MAX_KEYS:
        raise InvalidKey(f"{len(public_keys)} SSH keys, over the limit of {MAX_KEYS}")
    return [parse_key(key.key_data, index) for index, key in enumerate(public_keys)]


def enabled(settings) -> bool:
    return settings.install_ssh_keys


def check(host: Host, metadata, settings) -> None:
    user_step.validate(host, metadata.os_profile.admin_username)  # never a system account's keys
    validate(metadata.public_keys)
    preflight(host, metadata)


def _blob_of(line: str) -> Optional[str]:
    """The base64 key of an authorized_keys line (options allowed there), or None."""
    words = line.split()
    for index, word in enumerate(words[:-1]):
        if word in KEY_TYPES:
            return words[index + 1]
    return None


def merge(existing: str, keys: List[Tuple[str, str, str]]) -> str:
    """``existing`` lines kept as they are, followed by the keys it lacks (matched by key data)."""
    lines = [line for line in existing.splitlines() if line.strip()]
    present = {_blob_of(line) for line in lines}
    for key_type, blob, comment in keys:
        if blob not in present:
            lines.append(" ".join(part for part in (key_type, blob, comment) if part))
            present.add(blob)
    return "".join(line + "\n" for line in lines)


def _inside(path: str, home: str) -> bool:
    path, home = os.path.normpath(path), os.path.normpath(home)
    return path.startswith(home.rstrip("/") + "/")


def target_files(host: Host, user: PasswdEntry, public_keys) -> Dict[str, List[int]]:
    """``{authorized_keys path: [key indexes]}``: the IMDS path where it is inside the home, else
    where sshd reads keys."""
    patterns = sshd_config.authorized_keys_files(host)
    if not patterns:
        raise StepFailed("sshd_config says AuthorizedKeysFile none: nowhere to install SSH keys")
    default = sshd_config.expand(patterns[0], home=user.home, user=user.name)
    if "%" in default:
        raise StepFailed(f"AuthorizedKeysFile {patterns[0]!r} uses a token azprov cannot expand")
    targets: Dict[str, List[int]] = OrderedDict()
    for index, key in enumerate(public_keys):
        path = default
        if key.path and key.path != default:
            wanted = os.path.normpath(key.path)
            if key.path.startswith("/") and _inside(wanted, user.home):
                path = wanted
            else:
                log.warning("SSH key %d: path %r is outside %s's home; using %s instead",
                            index, key.path[:200], user.name, default)
        targets.setdefault(os.path.normpath(path), []).append(index)
    return targets


def apply(host: Host, metadata, settings) -> bool:
    keys = validate(metadata.public_keys)
    username = user_step.validate(host, metadata.os_profile.admin_username)
    user = host.user(username)
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


def _check_owner(directory: Dir, user: PasswdEntry) -> None:
    info = directory.stat()
    if info.st_uid not in (0, user.uid):
        raise UnsafePath(f"{directory.path} is owned by uid {info.st_uid}, not by {user.name} "
                         "or root; azprov will not write keys there", path=directory.path)
    if stat.S_IMODE(info.st_mode) & 0o022:  # sshd's StrictModes test, exactly
        raise UnsafePath(f"{directory.path} is writable by group or others; sshd would refuse "
                         "keys there", path=directory.path)


def _open_parent(host: Host, user: PasswdEntry, path: str, create: bool) -> Tuple[Optional[Dir], bool]:
    """The directory that holds ``path``, walked from the home with ``O_NOFOLLOW`` and checked
    like sshd's StrictModes; with ``create``, missing directories below the home are made and
    tightened to 0700 (returns whether that changed anything).  Without ``create`` a missing
    directory gives None: only what exists can be unsafe."""
    parent = os.path.dirname(path)
    inside_home = _inside(path, user.home)
    base = user.home if inside_home else parent
    below = split_path(parent)[len(split_path(base)):] if inside_home else []
    try:
        current = host.open_dir(base)
    except FileNotFoundError:
        if not create:
            return None, False
        raise StepFailed(f"{base} does not exist: cannot install {user.name}'s SSH keys",
                         path=base) from None
    changed = False
    try:
        if inside_home:
            _check_owner(current, user)
        for part in below:
            try:
                child = current.subdir(part, create_mode=0o700 if create else None,
                                       uid=user.uid, gid=user.gid)
            except FileNotFoundError:
                current.close()
                return None, False
            current.close()
            current = child
            _check_owner(current, user)
            if create:
                changed = current.set_owner_mode(0o700, user.uid, user.gid) or changed
    except BaseException:
        current.close()
        raise
    return current, changed


def preflight(host: Host, metadata) -> None:
    """Refuse, before any step changes anything, a key file ``apply`` would refuse to write
    (a symlink on its path, a directory owned by someone else); only for an existing user."""
    user = host.user(metadata.os_profile.admin_username)
    if user is None or not metadata.public_keys:
        return
    for path in target_files(host, user, metadata.public_keys):
        directory, _ = _open_parent(host, user, path, create=False)
        if directory is None:
            continue
        with directory:
            info = directory.lstat(os.path.basename(path))
            if info is not None and not stat.S_ISREG(info.st_mode):
                raise UnsafePath(f"{path} is not a regular file (a symbolic link?); azprov "
                                 "refuses to write through it", path=path)


def install(host: Host, user: PasswdEntry, path: str, keys: List[Tuple[str, str, str]]) -> bool:
    """Merge ``keys`` into ``path``: directories below the home 0700 and the file 0600, the user's."""
    directory, changed = _open_parent(host, user, path, create=True)
    name = os.path.basename(path)
    with directory:
        existing = directory.read(name)
        text = merge(existing.decode("utf-8", "replace") if existing else "", keys)
        changed = directory.write(name, text.encode(), mode=0o600, uid=user.uid, gid=user.gid) or changed
    if changed:
        log.info("installed %d SSH key(s) for %s in %s", len(keys), user.name, path)
        below = os.path.relpath(os.path.dirname(path), user.home).split("/")[0]
        _restorecon(host, os.path.join(user.home, below) if _inside(path, user.home) and below != "."
                    else os.path.dirname(path))
    return changed


def _restorecon(host: Host, path: str) -> None:
    if host.selinux_enabled() and host.which("restorecon"):
        host.run(["restorecon", "-R", path], timeout=60, check=False)
