"""The VM tests (marker ``vm``): real virtual machines in QEMU against the emulated fabric.

- :mod:`tests.vm.image`: the disk image (Debian's cloud kernel, azprov's .deb, networkd), cached
  by content under ``AZPROV_BOOT_CACHE``; variants made with ``debugfs -w``.
- :mod:`tests.vm.harness`: scenarios, booting to Ready, and what a disk holds after power-off
  (read with ``debugfs``, checked with ``e2fsck -fn``).
- The machinery itself is product code: :mod:`azprov.fabric.vm` (QEMU, the network namespace
  with a tap and dnsmasq, the emulator at the real fabric addresses), also behind
  ``azprov fabric boot``.
"""
