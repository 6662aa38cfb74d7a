"""Root's password, locked on every new VM (``[provisioning] lock_root_password``, on by default).

An image built from an installer ISO or on premises often still has the root password its builder
typed: every VM from it would share that one password (the serial console, ``su``), and an empty
field asks for none at all where PAM says ``nullok``.  WALinuxAgent locks it at provisioning and at
deprovision (``Provisioning.DeleteRootPassword``: its Linux ``del_root_password`` rewrites root's
shadow entry to ``*LOCK*``); azprov does both too, with ``usermod -L root``, which keeps the hash
behind a ``!`` (``usermod -U root`` gives it back) and leaves root's account, shell, password ages
and SSH keys as they are.  A root whose password is already locked (``!``) or was never set
(``*``) is left alone, so the usual cloud image runs no command here.  ``azprov check`` reports
an image whose root has a usable password, before it is captured.
"""

from __future__ import annotations

import logging

from azprov.host import Host, passwords

log = logging.getLogger(__name__)

NAME = "root_password"


def enabled(settings) -> bool:
    return settings.lock_root_password


def check(host: Host, metadata, settings) -> None:
    return None


def apply(host: Host, metadata, settings) -> bool:
    field = host.accounts.password_field("root")
    if not passwords.lock(host, "root"):
        return False
    log.warning("root had %s in the image: locked it (usermod -L root), so VMs from the image do not "
                "share it; [provisioning] lock_root_password = false keeps it",
                "an empty password" if passwords.empty(field) else "a password")
    return True
