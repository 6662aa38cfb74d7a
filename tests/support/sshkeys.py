"""Structurally valid OpenSSH public key lines of every type (not real key pairs): the blob has the
fields sshd parses for its type, derived from a seed so tests can make many distinct keys."""

from __future__ import annotations

import base64
import hashlib
import struct

EC_POINT = {"nistp256": 65, "nistp384": 97, "nistp521": 133}


def ssh_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _bytes(seed: bytes, label: str, size: int) -> bytes:
    out = b""
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(seed + label.encode() + counter.to_bytes(4, "big")).digest()
        counter += 1
    return out[:size]


def mpint(value: bytes) -> bytes:
    value = value.lstrip(b"\0") or b"\0"
    if value[0] & 0x80:
        value = b"\0" + value
    return ssh_string(value)


def blob(key_type: str, seed: bytes = b"") -> bytes:
    """The public key blob of ``key_type`` (any type azprov accepts), distinct per ``seed``."""
    head = ssh_string(key_type.encode())
    if "-cert-v01@" in key_type:
        return head + ssh_string(_bytes(seed, "nonce", 32)) + _bytes(seed, "rest", 64)
    if key_type == "ssh-ed25519":
        return head + ssh_string(_bytes(seed, "pk", 32))
    if key_type == "sk-ssh-ed25519@openssh.com":
        return head + ssh_string(_bytes(seed, "pk", 32)) + ssh_string(b"ssh:")
    if key_type == "ssh-rsa":
        modulus = bytes([0xC0]) + _bytes(seed, "n", 255)
        return head + mpint(b"\x01\x00\x01") + mpint(modulus)
    if key_type == "ssh-dss":
        return head + b"".join(mpint(b"\x7f" + _bytes(seed, part, 40)) for part in "pqgy")
    curve = key_type.split("-")[-1].split("@")[0]
    point = b"\x04" + _bytes(seed, "q", EC_POINT[curve] - 1)
    body = ssh_string(curve.encode()) + ssh_string(point)
    if key_type.startswith("sk-"):
        body += ssh_string(b"ssh:")
    return head + body


def key_line(key_type: str, comment: str = "me@laptop", seed: bytes = b"") -> str:
    return f"{key_type} {base64.b64encode(blob(key_type, seed)).decode()} {comment}".strip()
