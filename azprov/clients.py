"""Builds the two fabric clients from the configuration: one HTTP client, one policy per phase."""

from __future__ import annotations

from dataclasses import dataclass

from azprov.http import HttpClient, RetryPolicy, normalize_base_url
from azprov.imds import ImdsClient
from azprov.wireserver import WireServerClient


@dataclass(frozen=True)
class Fabric:
    wireserver: WireServerClient
    imds: ImdsClient
    wireserver_source: str  # where the WireServer address came from (for logs and `azprov endpoint`)


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


def connect(config, *, root: str = "/", http: "HttpClient | None" = None) -> Fabric:
    """The WireServer (explicit, DHCP option 245, or the default address) and IMDS clients."""
    from azprov.endpoint import discover_wireserver

    http = http or HttpClient()
    endpoint = discover_wireserver(config.wireserver.address or None, root=root)
    wireserver = WireServerClient(
        normalize_base_url(endpoint.address), http, policy(config, config.wireserver.deadline)
    )
    imds = ImdsClient(
        normalize_base_url(config.imds.address),
        http,
        policy(config, config.imds.deadline, retry_not_found=True),
    )
    return Fabric(wireserver, imds, endpoint.source)
