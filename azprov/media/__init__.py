"""The provisioning disc: find it (:mod:`.discover`), read ``ovf-env.xml`` from it in user space
(:mod:`.udf`, :mod:`.iso9660` over the bounded :mod:`.image`), or mount it as a last resort
(:mod:`.mount`); :mod:`.disc` ties these together."""
