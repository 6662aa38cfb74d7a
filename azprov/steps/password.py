"""The admin user's password, from the provisioning disc (``UserPassword`` in ``ovf-env.xml``).

At most 72 characters (Azure's limit), no control characters (``chpasswd`` reads lines).  Set
with ``chpasswd`` reading ``user:password`` on standard input, so the password is never on a
command line, in a log, in the journal or in the state file: on the live system through PAM (the
system's hashing, yescrypt on Debian 12), on an image tree with ``-R ROOT -c SHA512`` (PAM cannot
run inside a tree).  Without a password the user step keeps the account locked, as before.
"""

from __future__ import annotations

import logging
import unicodedata

from azprov.errors import InvalidPassword, PasswordTooLong
from azprov.host import Host

log = logging.getLogger(__name__)

NAME = "password"
MAX_LENGTH = 72




def validate(password: str) -> str:
    if len(password) > MAX_LENGTH:
        raise PasswordTooLong(f"the admin password is {len(password)} characters, over Azure's "
                              f"limit of {MAX_LENGTH}", length=len(password))
    if any(unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") for c in password):
        raise InvalidPassword("the admin password contains control characters or line separators")
    return password


def enabled(settings) -> bool:
    return settings.create_user


def check(host: Host, metadata, settings) -> None:
    if metadata.password is not None:
        host.accounts.admin_name(metadata.os_profile.admin_username)
        validate(metadata.password)


def apply(host: Host, metadata, settings) -> bool:
    if metadata.password is None:
        return False
    username = host.accounts.admin_name(metadata.os_profile.admin_username)
    password = validate(metadata.password)
    method = [] if host.live else ["-R", host.root, "-c", "SHA512"]
    host.run(["chpasswd", *method], input=f"{username}:{password}\n", timeout=60)
    log.info("set the password of %s from the provisioning disc", username)
    return True
