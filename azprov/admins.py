"""The admin users azprov provisioned on this image: ``/var/lib/azprov/admin-users``.

One user name a line, written once the steps are done and before Ready (a run that fails or is
killed earlier is retried at the next boot, which writes it then); azprov's sudoers drop-in is
then rewritten from it (:func:`grant_sudo`): the record, not the drop-in, says who gets sudo
rights.  Unlike the state, a plain ``azprov deprovision`` keeps this record: the user it names is still in the image, and a later ``azprov deprovision --user`` must be
able to remove it.  ``azprov check`` fails while a remembered user is still present.  Names are
validated on read and write, so a tampered file can name nothing but portable user names (and
``deprovision --user`` still refuses system accounts).
"""

from __future__ import annotations

import logging
from typing import Iterable, List, Optional

from azprov import state as state_file
from azprov import sudoers
from azprov.host import Host
from azprov.host.accounts import USERNAME

log = logging.getLogger(__name__)

ADMINS_FILE = state_file.STATE_DIR + "/admin-users"
ADMINS_LIMIT = 64 * 1024


def remembered(host: Host) -> List[str]:
    """The recorded admin users, in the order they were provisioned (invalid lines skipped)."""
    try:
        data = host.read_file(ADMINS_FILE, limit=ADMINS_LIMIT)
    except Exception as exc:  # a symlink, too large, unreadable: not trustworthy
        log.warning("ignoring %s: %s", ADMINS_FILE, exc)
        return []
    names: List[str] = []
    for line in (data or b"").decode("utf-8", "replace").splitlines():
        name = line.strip()
        if USERNAME.fullmatch(name) and name not in names:
            names.append(name)
    return names


def _write(host: Host, names: List[str]) -> bool:
    if not names:
        return host.remove(ADMINS_FILE)
    with state_file.open_state_dir(host) as directory:
        return directory.write("admin-users", "".join(f"{n}\n" for n in names).encode(), mode=0o600)


def remember(host: Host, username: str) -> bool:
    """Add ``username`` to the record; True if it was not there yet."""
    names = remembered(host)
    if username in names:
        return False
    return _write(host, names + [username])


def forget(host: Host, usernames: Iterable[str]) -> bool:
    gone = set(usernames)
    names = remembered(host)
    return _write(host, [n for n in names if n not in gone]) if gone & set(names) else False


def provisioned(host: Host, recorded: Optional[state_file.State]) -> List[str]:
    """Every admin user azprov provisioned on this image: the state's and the record's, in that
    order.  (Not the users its sudoers drop-in names: an image can plant any line there, and
    ``deprovision --user`` would remove the accounts it names.)"""
    names: List[str] = []
    if recorded is not None and recorded.admin_username:
        names.append(recorded.admin_username)
    names.extend(remembered(host))
    return list(dict.fromkeys(names))


def check(host: Host, username: str) -> None:
    """Refuse now what :func:`grant_sudo` would refuse after the steps (see azprov.sudoers)."""
    sudoers.check_name(username)
    sudoers.check(host)


def grant_sudo(host: Host) -> bool:
    """azprov's sudoers drop-in, rewritten whole: the remembered admin users and nobody else
    (:mod:`azprov.sudoers`); True if it changed."""
    return sudoers.own(host, sudoers.grants_for(host, remembered(host)))
