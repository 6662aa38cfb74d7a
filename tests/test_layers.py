"""Imports point one way, and there are no circles.

Every module of ``azprov/`` has its layer in :data:`LAYER` below (the one place the layering is
written down; ``docs/architecture.md`` describes it).  A module may import modules of its own
layer and of the layers in :data:`MAY_IMPORT`; the product never imports the fabric emulator
(only the command table of ``azprov.cli`` names ``azprov fabric``'s module).

An import is any ``import``/``from ... import`` anywhere in a module (at the top, inside a
function, under ``TYPE_CHECKING``), and any string constant that names an azprov module
(``"azprov.provision:command"`` in the command table, the modules ``azprov check --self-test``
imports by name).  Importing ``a.b.c`` also runs the packages ``a.b`` and ``a``: those count as
imported too, except the importer's own packages (loaded before it anyway).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "azprov"

ERRORS = "errors"
BASE = "http/host"
MIDDLE = "protocol/steps"
FLOWS = "flows"
FABRIC = "fabric"
CLI = "cli"

# layer -> the other layers its modules may import
MAY_IMPORT: Dict[str, Set[str]] = {
    ERRORS: set(),
    BASE: {ERRORS},
    MIDDLE: {ERRORS, BASE},
    FLOWS: {ERRORS, BASE, MIDDLE},
    FABRIC: {ERRORS, BASE, MIDDLE},  # the emulator speaks the protocol with azprov's own parsers
    CLI: {ERRORS, BASE, MIDDLE, FLOWS, FABRIC},  # FABRIC: `azprov fabric` in the command table
}

LAYER: Dict[str, str] = {
    # errors: what everything may use, importing nothing of azprov
    "azprov": ERRORS,  # version and user agent
    "azprov.errors": ERRORS,
    "azprov.report": ERRORS,  # the reports that carry an error: errors and the csv module only
    # http/host: the two ways out (network, machine) and the shared low-level parsers
    "azprov.address": BASE,
    "azprov.http": BASE,
    "azprov.xmlparse": BASE,
    "azprov.tomltext": BASE,
    "azprov.leases": BASE,
    "azprov.log": BASE,
    "azprov.notify": BASE,
    "azprov.background": BASE,
    "azprov.host": BASE,
    "azprov.host.accounts": BASE,
    "azprov.host.atomic": BASE,
    "azprov.host.homes": BASE,
    "azprov.host.passwords": BASE,
    "azprov.host.probes": BASE,
    "azprov.host.runner": BASE,
    "azprov.host.sshd_config": BASE,
    "azprov.host.walk": BASE,
    # protocol/steps: fabric documents and clients, the disc, the files azprov keeps, the steps
    "azprov.goalstate": MIDDLE,
    "azprov.health": MIDDLE,
    "azprov.wireserver": MIDDLE,
    "azprov.imds": MIDDLE,
    "azprov.ovf": MIDDLE,
    "azprov.sources": MIDDLE,
    "azprov.endpoint": MIDDLE,
    "azprov.clients": MIDDLE,
    "azprov.config": MIDDLE,
    "azprov.config_values": MIDDLE,
    "azprov.identity": MIDDLE,
    "azprov.kvp": MIDDLE,
    "azprov.state": MIDDLE,
    "azprov.attempts": MIDDLE,
    "azprov.admins": MIDDLE,
    "azprov.sudoers": MIDDLE,
    "azprov.unit": MIDDLE,
    "azprov.guards": MIDDLE,
    "azprov.waagent": MIDDLE,
    "azprov.agent_state": MIDDLE,
    "azprov.extensions": MIDDLE,
    "azprov.network": MIDDLE,
    "azprov.provisioning_data": MIDDLE,
    "azprov.media": MIDDLE,
    "azprov.media.disc": MIDDLE,
    "azprov.media.discover": MIDDLE,
    "azprov.media.image": MIDDLE,
    "azprov.media.iso9660": MIDDLE,
    "azprov.media.mount": MIDDLE,
    "azprov.media.udf": MIDDLE,
    "azprov.disks": MIDDLE,
    "azprov.disks.fstab": MIDDLE,
    "azprov.disks.layout": MIDDLE,
    "azprov.disks.mounts": MIDDLE,
    "azprov.disks.ntfs": MIDDLE,
    "azprov.disks.owner": MIDDLE,
    "azprov.disks.sysfs": MIDDLE,
    "azprov.steps": MIDDLE,
    "azprov.steps.dhcp": MIDDLE,
    "azprov.steps.host_keys": MIDDLE,
    "azprov.steps.hostname": MIDDLE,
    "azprov.steps.password": MIDDLE,
    "azprov.steps.root_password": MIDDLE,
    "azprov.steps.ssh_keys": MIDDLE,
    "azprov.steps.sshd": MIDDLE,
    "azprov.steps.user": MIDDLE,
    # flows: one command each
    "azprov.provision": FLOWS,
    "azprov.firewall": FLOWS,
    "azprov.deprovision": FLOWS,
    "azprov.early_hostname": FLOWS,  # the host name from the disc, before the network
    "azprov.check": FLOWS,
    "azprov.status": FLOWS,
    "azprov.commands": FLOWS,
    "azprov.tempdisk": FLOWS,  # the temporary disk, every boot
    # the fabric emulator (`azprov fabric`): never imported by the product
    "azprov.fabric": FABRIC,
    "azprov.fabric.cli": FABRIC,
    "azprov.fabric.disc": FABRIC,
    "azprov.fabric.documents": FABRIC,
    "azprov.fabric.endpoints": FABRIC,
    "azprov.fabric.faults": FABRIC,
    "azprov.fabric.instance": FABRIC,
    "azprov.fabric.listeners": FABRIC,
    "azprov.fabric.scenario": FABRIC,
    "azprov.fabric.server": FABRIC,
    "azprov.fabric.values": FABRIC,
    "azprov.fabric.vmnet": FABRIC,  # a VM's network namespace, tap and DHCP server
    "azprov.fabric.qemu": FABRIC,  # a VM's disk image, firmware and QEMU process
    "azprov.fabric.vm": FABRIC,  # a VM booted against the emulator (fabric boot, tests/vm/)
    "azprov.fabric.boot": FABRIC,  # azprov fabric boot: the verdict on an image
    # the command line
    "azprov.cli": CLI,
    "azprov.arguments": CLI,  # the command-line value types
    "azprov.__main__": CLI,
}

_MODULE_STRING = re.compile(r"azprov(?:\.[A-Za-z_][A-Za-z0-9_]*)*(?::[A-Za-z_][A-Za-z0-9_]*)?")


def modules(package: Path = PACKAGE) -> Dict[str, Path]:
    """Module name -> file, for every ``.py`` file of the package."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _ancestors(name: str) -> List[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def imported(name: str, path: Path, known: Dict[str, Path]) -> Iterator[Tuple[str, int, str]]:
    """``(module, line, how)`` for every azprov module ``name`` imports, however it does."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))

    def known_prefix(dotted: str) -> str:
        while dotted not in known and "." in dotted:
            dotted = dotted.rpartition(".")[0]
        return dotted

    for node in ast.walk(tree):
        targets: List[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if _MODULE_STRING.fullmatch(node.value) and node.value.partition(":")[0] in known:
                targets = [node.value.partition(":")[0]]
        for target in targets:
            if target != "azprov" and not target.startswith("azprov."):
                continue
            target = known_prefix(target)
            how = "string" if isinstance(node, ast.Constant) else "import"
            # importing a.b.c runs a.b and a first, unless they are the importer's own packages
            for module in [*_ancestors(target), target]:
                if module != name and module not in _ancestors(name) and module in known:
                    yield module, node.lineno, how


def graph() -> Dict[str, Dict[str, Tuple[int, str]]]:
    known = modules()
    return {name: {target: (line, how) for target, line, how in imported(name, path, known)}
            for name, path in known.items()}


def strongly_connected(edges: Dict[str, Dict[str, object]]) -> List[List[str]]:
    """Tarjan's strongly connected components with more than one module (the circles)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    circles: List[List[str]] = []

    def visit(start: str) -> None:  # iterative: no recursion limit
        work = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(edges.get(successor, ())))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        circles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return circles


def test_every_module_has_a_layer():
    names = set(modules())
    assert sorted(names - set(LAYER)) == [], "new modules: give them a layer in LAYER"
    assert sorted(set(LAYER) - names) == [], "modules that no longer exist: remove them from LAYER"


def test_imports_point_down():
    upward = []
    for name, targets in graph().items():
        layer = LAYER[name]
        for target, (line, how) in sorted(targets.items()):
            other = LAYER[target]
            if other != layer and other not in MAY_IMPORT[layer]:
                upward.append(f"{modules()[name].relative_to(PACKAGE.parent)}:{line}: {name} ({layer}) "
                              f"{'names' if how == 'string' else 'imports'} {target} ({other})")
    assert upward == []


def test_only_the_command_table_names_the_emulator():
    edges = graph()
    users = sorted({name for name, targets in edges.items() if LAYER[name] != FABRIC
                    for target in targets if LAYER[target] == FABRIC})
    assert users == ["azprov.cli"]
    assert {t for t in edges["azprov.cli"] if LAYER[t] == FABRIC} <= {"azprov.fabric", "azprov.fabric.cli"}
    assert all(how == "string" for t, (_, how) in edges["azprov.cli"].items() if LAYER[t] == FABRIC)


def test_no_circles():
    assert strongly_connected(graph()) == []


def test_errors_imports_nothing_of_azprov():
    assert graph()["azprov.errors"] == {}


# Steps reach the system only through Host (its files, commands and ``host.probes``): what a
# step module may not touch itself.
_SYSTEM_MODULES = {"subprocess", "shutil", "pwd", "grp", "spwd", "glob", "fcntl", "pathlib", "tempfile"}
_PATH_STRING_FUNCTIONS = {"join", "normpath", "relpath", "basename", "dirname", "split", "isabs",
                          "splitext", "commonpath"}


def _dotted(node: ast.AST) -> str:
    """``os.path.exists`` for a plain dotted name, else "" (a method of a call's result...)."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return ".".join([node.id, *reversed(parts)]) if isinstance(node, ast.Name) else ""


def system_access(path: Path) -> List[str]:
    """What in a module reaches the system without Host: imports of the modules above, ``open``,
    and ``os`` calls other than path-string functions."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [(node.module or "").split(".")[0]]
        else:
            names = []
        found += [f"{node.lineno}: import {name}" for name in names if name in _SYSTEM_MODULES]
        if isinstance(node, ast.Call):
            function = _dotted(node.func)
            if function == "open" or (function.startswith("os.") and not (
                    function.startswith("os.path.") and function.split(".")[-1] in _PATH_STRING_FUNCTIONS)):
                found.append(f"{node.lineno}: {function}()")
    return found


@pytest.mark.parametrize("module", sorted(m for m in LAYER if m.startswith("azprov.steps")))
def test_steps_reach_the_system_only_through_host(module):
    assert system_access(modules()[module]) == []
    allowed = {"azprov", "azprov.errors"}
    assert sorted(t for t in graph()[module] if t not in allowed and not t.startswith(("azprov.host", "azprov.steps"))) == []


def test_the_system_access_check_sees_it(tmp_path):
    path = tmp_path / "step.py"
    path.write_text("import os, subprocess\nos.path.join('a', 'b')\nos.path.exists('/x')\nopen('/etc/x')\n"
                    "os.path.normpath('/a').startswith('/')\n")
    assert system_access(path) == ["1: import subprocess", "3: os.path.exists()", "4: open()"]


# --- the checker itself: it must see what it claims to see -------------------------------------


def _scan(tmp_path, files: Dict[str, str]) -> Dict[str, Dict[str, Tuple[int, str]]]:
    package = tmp_path / "azprov"
    for relative, text in {"__init__.py": "", **files}.items():
        (package / relative).parent.mkdir(parents=True, exist_ok=True)
        (package / relative).write_text(text)
    known = modules(package)
    return {name: {t: v for t, *v in ((t, line, how) for t, line, how in imported(name, path, known))}
            for name, path in known.items()}


def test_the_checker_sees_every_kind_of_import(tmp_path):
    edges = _scan(tmp_path, {
        "a.py": "def f():\n    import azprov.b\n",  # lazy
        "b.py": "from azprov import c\n",  # from the package
        "c.py": "from .sub import d\n",  # relative, into a subpackage: runs azprov.sub too
        "sub/__init__.py": "",
        "sub/d.py": "from . import e\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from azprov.f import X\n",
        "sub/e.py": "",
        "f.py": "TABLE = {'x': 'azprov.g:handler'}\n",  # a command table
        "g.py": "NOT_A_MODULE = 'azprov.service'\n",
    })
    assert set(edges["azprov.a"]) == {"azprov.b"}
    assert set(edges["azprov.b"]) == {"azprov.c"}
    assert set(edges["azprov.c"]) == {"azprov.sub", "azprov.sub.d"}
    assert set(edges["azprov.sub.d"]) == {"azprov.sub.e", "azprov.f"}  # not its own package
    assert edges["azprov.f"] == {"azprov.g": [1, "string"]}
    assert edges["azprov.g"] == {}


def test_the_checker_finds_circles(tmp_path):
    edges = _scan(tmp_path, {"a.py": "import azprov.b\n", "b.py": "def f():\n    from azprov import c\n",
                             "c.py": "import azprov.a\n", "d.py": "import azprov.a\n"})
    assert strongly_connected(edges) == [["azprov.a", "azprov.b", "azprov.c"]]
    assert strongly_connected({"x": {"y": 1}, "y": {}}) == []


@pytest.mark.parametrize("layer", sorted(MAY_IMPORT))
def test_the_layers_point_one_way(layer):
    """No two layers may import each other (the table itself has no circle)."""
    assert all(layer not in MAY_IMPORT[other] for other in MAY_IMPORT[layer])


ARCHITECTURE = PACKAGE.parent / "docs" / "architecture.md"


def _documented_layers() -> Dict[str, str]:
    """docs/architecture.md's layer table: layer -> the modules cell."""
    rows = {}
    for line in ARCHITECTURE.read_text().splitlines():
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) > 3 and cells[1] in MAY_IMPORT:
            rows[cells[1]] = cells[2]
    return rows


@pytest.mark.parametrize("module", sorted(m for m in LAYER if LAYER[m] != FABRIC and m != "azprov"))
def test_the_architecture_names_each_module_in_its_layer_and_its_job(module):
    """The layer table of docs/architecture.md names every product module in its own layer's row
    (a package's modules may be named together, ``host/*``), and the module table has a row for
    it or its package (``azprov/steps/*.py``)."""
    short = module[len("azprov."):]
    parts = short.split(".")
    names = [f"`{short}`", f"`{parts[-1]}`", f"`{parts[0]}/*`"]
    assert any(name in _documented_layers()[LAYER[module]] for name in names), (module, LAYER[module])
    path = "/".join(parts)
    text = ARCHITECTURE.read_text()
    package = (PACKAGE / path).is_dir()  # a package's __init__: a row of one of its modules will do
    rows = [f"| `azprov/{path}.py`", f"| `azprov/{path}/__init__.py`", f"`{path}.py`",
            f"| `azprov/{parts[0]}/*.py`"] + ([f"| `azprov/{path}/"] if package else [])
    assert any(row in text for row in rows), module
