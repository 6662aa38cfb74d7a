"""The disks Azure gives a VM: which one is the temporary disk (:mod:`azprov.disks.sysfs`), what
it holds (:mod:`azprov.disks.layout`, :mod:`azprov.disks.ntfs`), who owns it
(:mod:`azprov.disks.owner`) and the ``/etc/fstab`` lines that would trip over it
(:mod:`azprov.disks.fstab`).  The per-boot job that uses them is :mod:`azprov.tempdisk`.
"""
