"""The boot-test harness: real Debian 12 image, real systemd as PID 1, the real .deb.

- :mod:`tests.boot.image`: build the .deb (``make deb``), build (or reuse) the mmdebstrap base
  tree cached under ``.cache/boot/``, and make a bootable image from it: the package installed
  with ``dpkg -i`` (its maintainer scripts enable the stock unit), the test-only recorder unit
  added, and the tree generalized (no SSH host keys, a neutral hostname, empty machine-id,
  persistent journal).
- :mod:`tests.boot.fabric`: a private network namespace holding 168.63.129.16 and
  169.254.169.254 on its loopback, and ``azprov fabric serve`` running inside it.
- :mod:`tests.boot.nspawn`: boot a tree with ``systemd-nspawn -b`` inside that namespace under
  a hard timeout, run a command in a tree without booting, read the image's journal.

Nothing here touches the host's own network namespace with the fabric addresses, and every
namespace, process and tree it creates is removed by the code that created it.
"""
