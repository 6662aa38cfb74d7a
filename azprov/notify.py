"""sd_notify: tell systemd when login-relevant state is in place and what azprov is doing.

Uses systemd-python's ``systemd.daemon.notify`` when installed, else writes the datagram itself;
outside systemd (no ``NOTIFY_SOCKET``) every call does nothing.
"""

from __future__ import annotations

import os
import socket


class Notifier:
    def __init__(self) -> None:
        self.socket_path = os.environ.get("NOTIFY_SOCKET") or None
        self.ready_sent = False

    @property
    def active(self) -> bool:
        return self.socket_path is not None

    def _send(self, message: str) -> None:
        if not self.active:
            return
        try:
            from systemd.daemon import notify
        except ImportError:
            notify = None
        if notify is not None:
            notify(message)
            return
        address = self.socket_path
        if address.startswith("@"):
            address = "\0" + address[1:]
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(address)
                sock.sendall(message.encode("utf-8"))
        except OSError:
            pass  # systemd went away: nothing to tell

    def status(self, text: str) -> None:
        self._send(f"STATUS={text}")

    def ready(self, text: str = "") -> None:
        """READY=1 releases the units ordered after azprov (sshd, logins)."""
        if not self.ready_sent:
            self._send("READY=1" + (f"\nSTATUS={text}" if text else ""))
            self.ready_sent = True
