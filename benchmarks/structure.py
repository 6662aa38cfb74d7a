"""The shape of the code and how often one run reads the same input (issue 18's numbers).

Static, from the source of ``azprov/`` (``ast``): how many modules (the product, and the fabric
emulator apart), the longest functions, and how many methods class ``Host`` has.

Traced, from real runs in this process: ``azprov provision --root DIR`` on a fresh scratch image
tree (tests/support/scratch_root.py) against the fabric emulator on loopback, then
``azprov report-ready --root DIR`` against the same emulator.  Counted while each runs: ``Host``
objects built, reads of ``/etc/ssh/sshd_config`` (and of any file of sshd's configuration), and
address parses (``azprov.address.parse_address``).

Needs root (``useradd --root`` chroots).  Figures, not assertions::

    sudo .venv/bin/python benchmarks/structure.py [--json]
"""

from __future__ import annotations

import argparse
import ast
import collections
import contextlib
import io
import json
import os
import sys
import tempfile
from typing import Dict, List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "azprov")
sys.path[:0] = [REPO, os.path.join(REPO, "tests")]


def modules() -> Dict[str, List[str]]:
    found: Dict[str, List[str]] = {"product": [], "fabric": []}
    for base, _dirs, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.relpath(os.path.join(base, name), REPO)
                found["fabric" if path.startswith("azprov/fabric/") else "product"].append(path)
    return found


def functions(paths: List[str]):
    """(lines, qualified name) of every function and method."""
    result = []
    for path in paths:
        tree = ast.parse(open(os.path.join(REPO, path)).read())

        def walk(node, prefix):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    name = f"{prefix}{child.name}"
                    result.append((child.end_lineno - child.lineno + 1, f"{path}:{name}"))
                    walk(child, name + ".")
                elif isinstance(child, ast.ClassDef):
                    walk(child, f"{prefix}{child.name}.")
        walk(tree, "")
    return sorted(result, reverse=True)


def host_methods() -> List[str]:
    tree = ast.parse(open(os.path.join(PACKAGE, "host", "__init__.py")).read())
    (host,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Host"]
    return [n.name for n in host.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


class Counter:
    """Wraps Host.__init__, the Host reads and parse_address for the length of one run."""

    def __init__(self) -> None:
        self.counts: collections.Counter = collections.Counter()
        self.paths: collections.Counter = collections.Counter()  # reads per in-root path

    @contextlib.contextmanager
    def tracing(self):
        import azprov.address
        from azprov import host as host_module

        patched = []

        def wrap(owner, name, count):
            original = getattr(owner, name)

            def wrapper(*args, **kwargs):
                count(args, kwargs)
                return original(*args, **kwargs)
            setattr(owner, name, wrapper)
            patched.append((owner, name, original))

        def host_built(args, kwargs):
            self.counts["Host objects"] += 1

        def read(args, kwargs):
            path = args[1] if len(args) > 1 else kwargs.get("path", "")
            self.paths[path] += 1
            if path == "/etc/ssh/sshd_config":
                self.counts["sshd_config reads"] += 1
            if path.startswith("/etc/ssh/sshd_config"):
                self.counts["sshd configuration file reads"] += 1

        def parsed(args, kwargs):
            self.counts["address parses"] += 1

        wrap(host_module.Host, "__init__", host_built)
        # the one read (Host.read) where there is one, else the three reads of before
        names = ("read",) if hasattr(host_module.Host, "read") else ("read_text", "read_bytes", "read_file")
        for name in names:
            wrap(host_module.Host, name, read)
        # every module that imported parse_address by name, and the module itself
        original_parse = azprov.address.parse_address
        for module in list(sys.modules.values()):
            if (getattr(module, "__name__", "").startswith("azprov")
                    and getattr(module, "parse_address", None) is original_parse):
                wrap(module, "parse_address", parsed)
        try:
            yield self.counts
        finally:
            for owner, name, original in reversed(patched):
                setattr(owner, name, original)


def traced_runs() -> Dict[str, Dict[str, int]]:
    import azprov.arguments  # noqa: F401 - imported before tracing, so its parse_address is wrapped
    import azprov.clients  # noqa: F401
    import azprov.config  # noqa: F401
    from azprov import cli
    from azprov.fabric import FabricEmulator, Scenario
    from support.scratch_root import make_scratch_root

    results = {}
    fabric = FabricEmulator(Scenario.from_dict({}), wireserver=("127.0.0.1", 0), imds=("127.0.0.1", 0))
    fabric.start()
    try:
        with tempfile.TemporaryDirectory() as scratch:
            root = make_scratch_root(os.path.join(scratch, "root"))
            addresses = ["--wireserver", fabric.wireserver_url, "--imds", fabric.imds_url, "--timeout", "20"]
            for name, argv in (("provision --root", ["provision", "--root", root, *addresses]),
                               ("report-ready --root", ["report-ready", "--root", root, *addresses])):
                counter = Counter()
                with counter.tracing() as counts, contextlib.redirect_stdout(io.StringIO()):
                    code = cli.main(argv)
                if code != 0:
                    raise SystemExit(f"{name} failed with exit code {code}")
                results[name] = {key: counts[key] for key in
                                 ("Host objects", "sshd_config reads", "sshd configuration file reads", "address parses")}
                results[name]["files read more than once"] = {
                    path: times for path, times in sorted(counter.paths.items()) if times > 1}
    finally:
        fabric.stop()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--static", action="store_true", help="only the static figures (no root needed)")
    args = parser.parse_args()
    found = modules()
    longest = functions(found["product"])
    report = {
        "modules": {"product": len(found["product"]), "fabric emulator": len(found["fabric"])},
        "longest functions": [f"{lines:4d} {name}" for lines, name in longest[:8]],
        "functions over 40 lines": sum(1 for lines, _ in longest if lines > 40),
        "Host methods": len(host_methods()),
    }
    if not args.static:
        report["runs"] = traced_runs()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            if isinstance(value, list):
                print(f"{key}:")
                for line in value:
                    print(f"  {line}")
            elif isinstance(value, dict):
                print(f"{key}:")
                for sub, figure in value.items():
                    print(f"  {sub}: {figure}")
            else:
                print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
