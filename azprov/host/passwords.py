"""Passwords in the shadow file: which fields let somebody in, and locking one.

A field is *locked* when it starts with ``!`` (``usermod -L``, ``passwd -l``: the hash is kept
behind the mark, ``usermod -U`` gives it back) or ``*`` (no password was ever set: Debian's root
when the installer was given none, every system account).  Any other field is *usable*: a crypt(3)
hash somebody knows the password of, or, worst, an empty field, which asks for no password at all
wherever PAM says ``nullok`` (Debian's ``common-auth`` does: the console, ``su``).  A field that is
neither a hash nor empty (``x`` in the shadow file) cannot be matched by any password; it still
counts as usable here, so a check errs on the side of saying so and a lock on the side of locking.
"""

from __future__ import annotations

from typing import Dict, Optional

from azprov.host.accounts import records

SHADOW = "/etc/shadow"

LOCK_MARKS = ("!", "*")


def usable(field: Optional[str]) -> bool:
    """Whether the shadow password ``field`` lets somebody log in (None: no shadow entry)."""
    return field is not None and not field.startswith(LOCK_MARKS)


def empty(field: Optional[str]) -> bool:
    """Whether ``field`` asks for no password at all."""
    return field == ""


def fields(host) -> Dict[str, str]:
    """Every account's shadow password field, by name (the first entry of a name wins, as the
    libraries read it)."""
    found: Dict[str, str] = {}
    for record in records(host.read_text(SHADOW), 2):
        found.setdefault(record[0], record[1])
    return found


def lock(host, name: str) -> bool:
    """Lock ``name``'s password with ``usermod -L`` unless it is locked already (the account, its
    shell and its SSH keys stay as they are); True if it changed.  ``host`` is an
    :class:`azprov.host.Host`."""
    if not usable(host.accounts.password_field(name)):
        return False
    host.run(["usermod", *host.root_option(), "-L", "--", name], timeout=60)
    return True
