"""``azprov fabric serve``: run the fabric emulator until SIGTERM or SIGINT.

Both listeners run in this one process.  One line on stderr says where they listen; request
records go as JSON lines to ``--log FILE`` (appended) or to stdout.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Tuple

from azprov.address import parse_address
from azprov.errors import ConfigError


def parse_listen(text: str, option: str = "address") -> Tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` (``http://`` accepted and ignored) → ``(host, port)``;
    port 0 means any free port."""
    try:
        address = parse_address(text, listen=True)
    except ConfigError as exc:
        raise ConfigError(f"{option}: {exc}") from None
    assert address.port is not None  # required by listen=True
    return address.host, address.port


def command(args, config, host) -> int:
    """``azprov fabric serve|disc|boot`` (the emulator works on no host: ``host`` is unused)."""
    if getattr(args, "fabric_command", "serve") == "boot":
        from azprov.fabric.boot import command as boot_command

        return boot_command(args, config)
    if getattr(args, "fabric_command", "serve") == "disc":
        from azprov.fabric.disc import command as disc_command

        return disc_command(args, config)
    return serve(args)


def serve(args) -> int:
    from azprov.fabric.scenario import Scenario, load_scenario
    from azprov.fabric.server import FabricEmulator

    wireserver = parse_listen(args.listen_wireserver, "--wireserver")
    imds = parse_listen(args.listen_imds, "--imds")
    scenario = load_scenario(args.scenario) if args.scenario else Scenario()
    fabric = FabricEmulator(
        scenario,
        wireserver=wireserver,
        imds=imds,
        log_path=args.log,
        log_stream=None if args.log else sys.stdout,
    )
    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, lambda *_: stop.set())
    try:
        fabric.start()
        notes = []
        for name, listener in (("WireServer", scenario.wireserver), ("IMDS", scenario.imds_listener)):
            if listener.refuse_for:
                notes.append(f"{name} refuses connections for {listener.refuse_for:g} s")
        print(
            f"azprov fabric: WireServer on {fabric.wireserver_url}, IMDS on {fabric.imds_url}; "
            f"scenario: {args.scenario or 'default'}; request log: {args.log or 'stdout'}"
            + (f" ({'; '.join(notes)})" if notes else "")
            + "; stop with SIGTERM or Ctrl-C",
            file=sys.stderr, flush=True,
        )
        while not stop.wait(0.25):  # serves until a signal (the listeners run on their threads)
            pass
    finally:
        fabric.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    stats = fabric.stats()
    print(f"azprov fabric: stopped after {stats['requests']} requests, {stats['reports']} health reports accepted",
          file=sys.stderr, flush=True)
    return 0
