"""Builds the two fabric clients from the configuration: one HTTP client, one policy per phase."""

from __future__ import annotations

import typing
from typing import Optional

from azprov.address import Address
from azprov.http import HttpClient, RetryPolicy
from azprov.wireserver import WireServerClient

if typing.TYPE_CHECKING:
    from azprov.host import Host


class Fabric:
    """The two clients; the IMDS one is built on first use (``report-ready`` never needs it)."""

    def __init__(self, wireserver: WireServerClient, imds_factory,
                 http: Optional[HttpClient] = None) -> None:
        self.wireserver = wireserver
        self._imds_factory = imds_factory
        self._imds = None
        self._http = http

    def prepare(self) -> None:
        """Do the CPU work of the first requests in the calling thread, before the goal state
        and IMDS are fetched from two threads: importing ``requests`` and opening the session,
        building the IMDS client.  Two threads importing at once fight over the GIL; measured
        in the boot test, that cost more than fetching IMDS concurrently saved."""
        if self._http is not None:
            self._http.prepare()
        self.imds  # noqa: B018 - built now, in this thread

    @property
    def imds(self):
        if self._imds is None:
            self._imds = self._imds_factory()
        return self._imds


def policy(config, deadline: float, *, retry_not_found: bool = False) -> RetryPolicy:
    http = config.http
    return RetryPolicy(
        deadline=deadline,
        connect_timeout=http.connect_timeout,
        read_timeout=http.read_timeout,
        attempt_timeout=http.attempt_timeout,
        backoff_initial=http.backoff_initial,
        backoff_max=http.backoff_max,
        jitter=http.jitter,
        retry_not_found=retry_not_found,
    )


def connect(config, host: "Host", *, http: Optional[HttpClient] = None) -> Fabric:
    """The WireServer (explicit, DHCP option 245, or the default address) and IMDS clients.
    The configuration's addresses are parsed already; a lease gives a plain IPv4 address."""
    http = http or HttpClient()
    address = config.wireserver.address
    if address is None:  # not configured: discover it (only now are the lease parsers imported)
        from azprov.endpoint import discover_wireserver

        address = Address(discover_wireserver(None, host).address)
    wireserver = WireServerClient(
        address.url(), http, policy(config, config.wireserver.deadline),
        protocol=config.health.protocol,
    )

    def imds():
        from azprov.imds import ImdsClient

        return ImdsClient(config.imds.address.url(), http,
                          policy(config, config.imds.deadline, retry_not_found=True))

    return Fabric(wireserver, imds, http)
