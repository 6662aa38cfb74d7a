"""Every file under docs/examples/ is checked, with the best checker this machine has.

Checkers, chosen by file name (see ``CHECKERS``):

* ``*.json``: ``json.load``.  Azure Resource Manager templates (a ``deploymentTemplate``
  ``$schema``) must have ``$schema``, ``contentVersion``, ``parameters`` and ``resources``; every
  resource a ``type``, an ``apiVersion`` (``YYYY-MM-DD[-preview]``) and a ``name``; every
  ``[...]`` expression balanced brackets and quotes; every ``parameters('x')`` and
  ``variables('x')`` a declared name, and every declared parameter a use.  Files with a known
  role get content checks on top: the Image Builder template (customize/distribute, its inline
  Shell customizers pass ``bash -n``, the deprovisioning script is azprov's), the VM template
  (``provisionVMAgent`` false, SSH keys only) and the Batch pool (``virtualMachineConfiguration``
  with a gallery image and a ``nodeAgentSKUId``).
* ``*.sh``: a bash shebang and ``set -euo pipefail``; ``bash -n``; ``shellcheck`` when it is
  installed (``.ci/apt-packages`` lists it, so CI has it; without it that check is skipped, the
  others still run).  Every ``az vm create``/``az vmss create`` passes ``--enable-agent false``
  and no password or custom data, in scripts and guides alike.
* ``*.pkr.hcl``: always a small tokenizer written here (closed strings, heredocs and comments,
  balanced ``{}``/``[]``/``()`` and ``${}``), because this repository cannot add an HCL parser
  to its test extras.  When ``packer`` is installed (Debian 12 ships 1.6.6; ``.ci/apt-packages``
  lists it) also ``packer fmt -check`` and ``packer validate -syntax-only`` on a copy without
  the ``packer { required_plugins {...} }`` block, which Packer 1.6 does not know.  A full
  ``packer validate`` is not possible here: it needs the Azure plugin 2.x from the internet and
  Azure credentials.
* Bicep: no checker is available on this machine (the Bicep CLI is neither a Debian nor a PyPI
  package), so no ``.bicep`` file is shipped; one added later fails
  ``test_every_example_has_a_checker`` until a checker exists.

The guides in docs/images/ are checked too: they all exist and the index links them; their
relative links resolve; every example is shown by some guide; a code block introduced by
``<!-- example: docs/examples/PATH -->`` is byte-for-byte the example file, so the guides cannot
drift from the checked files.

The ``test_checker_rejects_*`` tests feed broken samples to each checker: a checker that cannot
fail would make the checks above worthless.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples"
GUIDES = ROOT / "docs" / "images"
GUIDE_NAMES = [
    "README.md",
    "packer.md",
    "image-builder.md",
    "compute-gallery.md",
    "batch.md",
    "scale-set.md",
    "create-vm.md",
    "troubleshooting.md",
]
TOOL_TIMEOUT = 120  # seconds per external checker run
# Packer asks a HashiCorp server for news unless told not to; the checks must stay offline.
TOOL_ENV = dict(os.environ, CHECKPOINT_DISABLE="1", PACKER_NO_COLOR="1")


class CheckFailed(AssertionError):
    """An example (or a sample in the self-tests) is broken; the message says how."""


def _run(args: List[str], cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, cwd=cwd, env=TOOL_ENV, capture_output=True, text=True, timeout=TOOL_TIMEOUT
    )


def _need(tool: str) -> str:
    found = shutil.which(tool)
    if found is None:
        pytest.skip(f"{tool} is not installed (bash .ci/setup installs it)")
    return found


# ------------------------------------------------------------------------------------------------
# JSON and ARM templates

ARM_SCHEMA = re.compile(r"^https://schema\.management\.azure\.com/schemas/[^/]+/deploymentTemplate\.json#$")
API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")
ARM_REFERENCE = re.compile(r"\b(parameters|variables)\(\s*'([^']*)'\s*\)")


def load_json(path: Path) -> object:
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckFailed(f"{path.name}: not valid JSON: {exc}") from None


def _strings(node: object, where: str = "$"):
    """Every string of a JSON document (object keys included) with a JSONPath-like location."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{where} (key)", key
            yield from _strings(value, f"{where}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _strings(value, f"{where}[{index}]")
    elif isinstance(node, str):
        yield where, node


def _check_arm_expression(where: str, text: str) -> None:
    """Brackets, parentheses and single-quoted strings of one ``[...]`` expression."""
    if not text.endswith("]"):
        raise CheckFailed(f"{where}: expression {text!r} does not end with ']'")
    body, depth, quoted, i = text[1:-1], 0, False, 0
    while i < len(body):
        char = body[i]
        if quoted:
            if char == "'" and body[i + 1 : i + 2] == "'":  # '' is an escaped quote
                i += 1
            elif char == "'":
                quoted = False
        elif char == "'":
            quoted = True
        elif char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
            if depth < 0:
                raise CheckFailed(f"{where}: unbalanced {char!r} in {text!r}")
        i += 1
    if quoted or depth:
        raise CheckFailed(f"{where}: unclosed quote or bracket in {text!r}")


def check_arm_template(template: object, name: str) -> None:
    if not isinstance(template, dict):
        raise CheckFailed(f"{name}: a template is a JSON object")
    for key in ("$schema", "contentVersion", "parameters", "resources"):
        if key not in template:
            raise CheckFailed(f"{name}: template has no {key!r}")
    if not ARM_SCHEMA.match(template["$schema"]):
        raise CheckFailed(f"{name}: unexpected $schema {template['$schema']!r}")
    resources = template["resources"]
    if not isinstance(resources, list) or not resources:
        raise CheckFailed(f"{name}: 'resources' must be a non-empty array")
    for index, resource in enumerate(resources):
        for key in ("type", "apiVersion", "name"):
            if key not in resource:
                raise CheckFailed(f"{name}: resources[{index}] has no {key!r}")
        if not API_VERSION.match(resource["apiVersion"]):
            raise CheckFailed(f"{name}: resources[{index}]: bad apiVersion {resource['apiVersion']!r}")
    declared = {
        "parameters": set(template.get("parameters", {})),
        "variables": set(template.get("variables", {})),
    }
    used = {"parameters": set(), "variables": set()}
    for where, text in _strings(template):
        if text.startswith("[") and not text.startswith("[["):
            _check_arm_expression(where, text)
            for kind, ref in ARM_REFERENCE.findall(text):
                if ref not in declared[kind]:
                    raise CheckFailed(f"{name}: {where}: {kind}('{ref}') is not declared")
                used[kind].add(ref)
    unused = declared["parameters"] - used["parameters"]
    if unused:
        raise CheckFailed(f"{name}: parameters declared but never used: {sorted(unused)}")


def _resources_of_type(template: dict, resource_type: str) -> List[dict]:
    return [r for r in template["resources"] if r.get("type", "").lower() == resource_type.lower()]


def check_image_builder_template(template: dict, name: str) -> None:
    found = _resources_of_type(template, "Microsoft.VirtualMachineImages/imageTemplates")
    if len(found) != 1:
        raise CheckFailed(f"{name}: expected one Microsoft.VirtualMachineImages/imageTemplates")
    resource = found[0]
    if resource.get("identity", {}).get("type") != "UserAssigned":
        raise CheckFailed(f"{name}: Image Builder runs as a user-assigned identity")
    props = resource.get("properties", {})
    for key in ("source", "customize", "distribute"):
        if not props.get(key):
            raise CheckFailed(f"{name}: imageTemplates properties have no {key!r}")
    if not any(d.get("type") == "SharedImage" and d.get("galleryImageId") for d in props["distribute"]):
        raise CheckFailed(f"{name}: no SharedImage (gallery) distribute target")
    inline = [step for step in props["customize"] if step.get("type") == "Shell" and "inline" in step]
    for step in inline:
        _bash_syntax("\n".join(step["inline"]) + "\n", f"{name}: customizer {step.get('name')!r}")
    script = "\n".join(line for step in inline for line in step["inline"])
    if "/tmp/DeprovisioningScript.sh" not in script or "azprov deprovision --force" not in script:
        raise CheckFailed(
            f"{name}: must replace Image Builder's waagent deprovisioning step by writing"
            " /tmp/DeprovisioningScript.sh with 'azprov deprovision --force'"
        )


def check_vm_template(template: dict, name: str) -> None:
    vms = _resources_of_type(template, "Microsoft.Compute/virtualMachines")
    if not vms:
        raise CheckFailed(f"{name}: no Microsoft.Compute/virtualMachines resource")
    for vm in vms:
        os_profile = vm.get("properties", {}).get("osProfile", {})
        linux = os_profile.get("linuxConfiguration", {})
        if linux.get("provisionVMAgent") is not False:
            raise CheckFailed(f"{name}: linuxConfiguration.provisionVMAgent must be false")
        if linux.get("disablePasswordAuthentication") is not True:
            raise CheckFailed(f"{name}: disablePasswordAuthentication must be true (SSH keys only)")
        if not linux.get("ssh", {}).get("publicKeys"):
            raise CheckFailed(f"{name}: no ssh.publicKeys")
        for key in ("adminPassword", "customData"):
            if key in os_profile:
                raise CheckFailed(f"{name}: osProfile.{key} cannot reach azprov (IMDS has no such data)")


def check_batch_pool(pool: object, name: str) -> None:
    if not isinstance(pool, dict):
        raise CheckFailed(f"{name}: a pool is a JSON object")
    for key in ("id", "vmSize", "virtualMachineConfiguration"):
        if key not in pool:
            raise CheckFailed(f"{name}: pool has no {key!r}")
    config = pool["virtualMachineConfiguration"]
    image = config.get("imageReference", {}).get("virtualMachineImageId", "")
    if "/providers/Microsoft.Compute/galleries/" not in image:
        raise CheckFailed(f"{name}: imageReference.virtualMachineImageId must name a gallery image")
    if not str(config.get("nodeAgentSKUId", "")).startswith("batch.node."):
        raise CheckFailed(f"{name}: virtualMachineConfiguration.nodeAgentSKUId missing or odd")
    command = str(pool.get("startTask", {}).get("commandLine", ""))
    for use in re.finditer(r"azprov status", command):
        # azprov status needs root (exit 9 otherwise); sudo -n works whether Batch runs the
        # admin auto-user as root or as a user with sudo rights, and never waits for a password
        if not command[:use.start()].endswith("sudo -n "):
            raise CheckFailed(f"{name}: the start task must run azprov status as 'sudo -n azprov status'")


# Content checks for JSON files with a known role, by path below docs/examples/.
JSON_ROLES: Dict[str, Callable[[dict, str], None]] = {
    "image-builder/azprov-template.json": check_image_builder_template,
    "vm/vm.json": check_vm_template,
    "batch/pool.json": check_batch_pool,
}


def check_json(path: Path) -> None:
    data = load_json(path)
    is_arm = isinstance(data, dict) and "deploymentTemplate" in str(data.get("$schema", ""))
    if is_arm:
        check_arm_template(data, path.name)
    role = JSON_ROLES.get(_relative(path))
    if role is not None:
        role(data, path.name)


# ------------------------------------------------------------------------------------------------
# shell

# "az vm create" / "az vmss create" in command position (not inside a message string).
AGENT_FLAG = re.compile(r"(?:^|[;&|(!`]|\bif|\bthen|\bdo)\s*az\s+(?:vm|vmss)\s+create\b")


def _bash_syntax(text: str, what: str) -> None:
    result = subprocess.run(
        ["bash", "-n"], input=text, capture_output=True, text=True, timeout=TOOL_TIMEOUT
    )
    if result.returncode != 0:
        raise CheckFailed(f"{what}: bash -n: {result.stderr.strip()}")


def _az_create_commands(text: str) -> List[str]:
    """The ``az vm create``/``az vmss create`` commands of shell text, continuations joined."""
    joined = re.sub(r"\\\n", " ", text)
    return [
        line
        for line in joined.splitlines()
        if AGENT_FLAG.search(line) and not line.lstrip().startswith("#")
    ]


def check_az_create_policy(text: str, what: str) -> None:
    for command in _az_create_commands(text):
        if not re.search(r"--enable-agent\s+false\b", command):
            raise CheckFailed(f"{what}: '{command.strip()[:60]}...' lacks --enable-agent false")
        for flag in ("--admin-password", "--custom-data", "--user-data"):
            if flag in command:
                raise CheckFailed(f"{what}: {flag} cannot reach azprov (IMDS has no such data)")


def check_shell_syntax(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    if not re.match(r"#!(/usr/bin/env bash|/bin/bash)\n", text):
        raise CheckFailed(f"{path.name}: first line must be a bash shebang")
    if not re.search(r"^set -euo pipefail$", text, re.MULTILINE):
        raise CheckFailed(f"{path.name}: no 'set -euo pipefail'")
    result = _run(["bash", "-n", str(path)])
    if result.returncode != 0:
        raise CheckFailed(f"{path.name}: bash -n: {result.stderr.strip()}")
    check_az_create_policy(text, path.name)


def check_shellcheck(path: Path) -> None:
    tool = _need("shellcheck")
    result = _run([tool, "--norc", "--external-sources", str(path)], cwd=path.parent)
    if result.returncode != 0:
        raise CheckFailed(f"{path.name}: shellcheck:\n{result.stdout}{result.stderr}")


# ------------------------------------------------------------------------------------------------
# HCL (Packer)

HEREDOC = re.compile(r"<<(-?)([A-Za-z_][A-Za-z0-9_-]*)[ \t]*\n")


def check_hcl_tokens(text: str, what: str = "HCL") -> None:
    """Closed strings, comments and heredocs; balanced (), [], {} and ${...}/%{...}.

    Not a parser: it catches the mistakes a hand edit makes (a lost brace or quote), not a
    misspelt attribute.
    """
    pairs = {"}": "{", "]": "[", ")": "("}
    stack: List[Tuple[str, int]] = []  # (opener, line): "{", "[", "(", '"' or "${"
    i, line, size = 0, 1, len(text)
    while i < size:
        char = text[i]
        top = stack[-1][0] if stack else None
        if top == '"':  # inside a quoted template string
            if char == "\\":
                i += 2
                continue
            if char == "\n":
                raise CheckFailed(f"{what}: line {line}: string not closed on its line")
            if char == '"':
                stack.pop()
            elif text.startswith(("$${", "%%{"), i):  # escaped, literal
                i += 3
                continue
            elif text.startswith(("${", "%{"), i):
                stack.append(("${", line))
                i += 2
                continue
            i += 1
            continue
        if char == "\n":
            line += 1
        elif char == "#" or text.startswith("//", i):
            end = text.find("\n", i)
            i = size if end < 0 else end
            continue
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise CheckFailed(f"{what}: line {line}: /* comment not closed")
            line += text.count("\n", i, end)
            i = end + 2
            continue
        elif text.startswith("<<", i) and HEREDOC.match(text, i):
            match = HEREDOC.match(text, i)
            closing = re.compile(r"^[ \t]*" + re.escape(match.group(2)) + r"[ \t]*$", re.MULTILINE)
            end = closing.search(text, match.end())
            if end is None:
                raise CheckFailed(f"{what}: line {line}: heredoc {match.group(2)} not closed")
            line += text.count("\n", i, end.end())
            i = end.end()
            continue
        elif char == '"':
            stack.append(('"', line))
        elif char in "{[(":
            stack.append((char, line))
        elif char in "}])":
            if top == "${" and char == "}":
                stack.pop()
            elif top != pairs[char]:
                raise CheckFailed(f"{what}: line {line}: {char!r} does not close {top or 'anything'}")
            else:
                stack.pop()
        i += 1
    if stack:
        opener, opened = stack[-1]
        raise CheckFailed(f"{what}: {opener!r} opened on line {opened} is never closed")


def check_hcl_structure(path: Path) -> None:
    check_hcl_tokens(path.read_text(encoding="utf-8"), path.name)


def check_packer_fmt(path: Path) -> None:
    tool = _need("packer")
    result = _run([tool, "fmt", "-check", "-diff", str(path)])
    if result.returncode != 0:
        raise CheckFailed(f"{path.name}: packer fmt -check:\n{result.stdout}{result.stderr}")


def _without_packer_block(text: str) -> str:
    """``text`` minus its top-level ``packer { ... }`` block (unknown to Packer 1.6)."""
    return re.sub(r"(?ms)^packer\s*\{.*?^\}\n?", "", text)


def check_packer_validate_syntax(path: Path) -> None:
    tool = _need("packer")
    text = _without_packer_block(path.read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory() as workdir:
        copy = Path(workdir) / path.name
        copy.write_text(text, encoding="utf-8")
        result = _run([tool, "validate", "-syntax-only", copy.name], cwd=Path(workdir))
    if result.returncode != 0:
        raise CheckFailed(f"{path.name}: packer validate -syntax-only:\n{result.stdout}{result.stderr}")


# ------------------------------------------------------------------------------------------------
# which checkers run on which file

Checker = Tuple[str, Callable[[Path], None]]
CHECKERS: List[Tuple[str, List[Checker]]] = [
    (".json", [("json", check_json)]),
    (".sh", [("bash-n", check_shell_syntax), ("shellcheck", check_shellcheck)]),
    (
        ".pkr.hcl",
        [
            ("hcl-tokens", check_hcl_structure),
            ("packer-fmt", check_packer_fmt),
            ("packer-validate-syntax", check_packer_validate_syntax),
        ],
    ),
]


def _relative(path: Path) -> str:
    try:
        return path.relative_to(EXAMPLES).as_posix()
    except ValueError:  # a sample outside docs/examples/ (self-tests)
        return path.name


def checkers_for(path: Path) -> List[Checker]:
    for suffix, checkers in CHECKERS:
        if path.name.endswith(suffix):
            return checkers
    return []


def example_files() -> List[Path]:
    return sorted(p for p in EXAMPLES.rglob("*") if p.is_file())


def _cases() -> List:
    return [
        pytest.param(path, name, check, id=f"{_relative(path)}::{name}")
        for path in example_files()
        for name, check in checkers_for(path)
    ]


def test_examples_exist() -> None:
    names = {_relative(p) for p in example_files()}
    expected = {
        "packer/azprov-debian12.pkr.hcl",
        "packer/install-azprov.sh",
        "image-builder/azprov-template.json",
        "gallery/capture.sh",
        "batch/pool.json",
        "scale-set/create-vmss.sh",
        "vm/create-vm.sh",
        "vm/vm.json",
    }
    assert expected <= names, f"missing examples: {sorted(expected - names)}"


def test_every_example_has_a_checker() -> None:
    unchecked = [_relative(p) for p in example_files() if not checkers_for(p)]
    assert not unchecked, f"examples no checker covers (add one to CHECKERS): {unchecked}"


@pytest.mark.parametrize(("path", "name", "check"), _cases())
def test_example(path: Path, name: str, check: Callable[[Path], None]) -> None:
    check(path)


# ------------------------------------------------------------------------------------------------
# the guides

EXAMPLE_MARK = re.compile(r"<!-- example: (\S+) -->\n+```[a-z]*\n(.*?)^```$", re.DOTALL | re.MULTILINE)
CODE_BLOCK = re.compile(r"^```[a-z]*\n(.*?)^```$", re.DOTALL | re.MULTILINE)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _guides() -> List[Path]:
    return sorted(GUIDES.glob("*.md"))


def test_guides_exist_and_index_links_them() -> None:
    missing = [name for name in GUIDE_NAMES if not (GUIDES / name).is_file()]
    assert not missing, f"missing guides in docs/images/: {missing}"
    index = (GUIDES / "README.md").read_text(encoding="utf-8")
    for name in GUIDE_NAMES[1:]:
        assert f"]({name})" in index, f"docs/images/README.md does not link {name}"


def heading_anchors(markdown: Path) -> set:
    """GitHub-style anchors of the headings of ``markdown`` (code blocks skipped)."""
    text = CODE_BLOCK.sub("", markdown.read_text(encoding="utf-8"))
    anchors = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", text, re.MULTILINE):
        plain = re.sub(r"[`*_]|\[([^]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
        anchors.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", plain)))
    return anchors


def check_links(markdown: Path) -> None:
    """Relative links point at existing files, and #anchors at existing headings."""
    text = CODE_BLOCK.sub("", markdown.read_text(encoding="utf-8"))
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        local = (markdown.parent / path).resolve() if path else markdown
        if not local.exists():
            raise CheckFailed(f"{markdown.name}: broken link {target}")
        if anchor and local.suffix == ".md" and anchor not in heading_anchors(local):
            raise CheckFailed(f"{markdown.name}: no heading for #{anchor} in {local.name}")


def check_embedded_examples(markdown: Path) -> int:
    """Compare every marked code block with its file; return how many there were."""
    text = markdown.read_text(encoding="utf-8")
    count = 0
    for target, block in EXAMPLE_MARK.findall(text):
        count += 1
        source = ROOT / target
        if not source.is_file():
            raise CheckFailed(f"{markdown.name}: example {target} does not exist")
        if block != source.read_text(encoding="utf-8"):
            raise CheckFailed(f"{markdown.name}: the copy of {target} differs from the file")
    return count


@pytest.mark.parametrize("guide", _guides(), ids=lambda p: p.name)
def test_guide(guide: Path) -> None:
    check_links(guide)
    count = check_embedded_examples(guide)
    if guide.name not in ("README.md", "troubleshooting.md"):
        assert count >= 1, f"{guide.name} shows no complete example"
    for block in CODE_BLOCK.findall(guide.read_text(encoding="utf-8")):
        check_az_create_policy(block, guide.name)


def test_every_example_is_shown_in_a_guide() -> None:
    shown = set()
    for guide in _guides():
        shown.update(target for target, _ in EXAMPLE_MARK.findall(guide.read_text(encoding="utf-8")))
    missing = [_relative(p) for p in example_files() if f"docs/examples/{_relative(p)}" not in shown]
    assert not missing, f"examples no guide shows: {missing}"


# ------------------------------------------------------------------------------------------------
# the checkers themselves must be able to fail

MINIMAL_ARM = {
    "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
    "contentVersion": "1.0.0.0",
    "parameters": {"name": {"type": "string"}},
    "resources": [
        {"type": "Microsoft.Storage/storageAccounts", "apiVersion": "2023-01-01", "name": "[parameters('name')]"}
    ],
}


def _arm(**changes: object) -> dict:
    template = json.loads(json.dumps(MINIMAL_ARM))
    template.update(changes)
    return template


def test_checker_accepts_minimal_arm_template() -> None:
    check_arm_template(_arm(), "minimal")


@pytest.mark.parametrize(
    "template",
    [
        pytest.param(_arm(resources=[{"type": "x", "apiVersion": "2023-01-01", "name": "[parameters('nme')]"}]), id="undeclared-parameter"),
        pytest.param(_arm(parameters={"name": {"type": "string"}, "unused": {"type": "string"}}), id="unused-parameter"),
        pytest.param(_arm(resources=[{"type": "x", "apiVersion": "2023-01-01", "name": "[concat(parameters('name')]"}]), id="unbalanced-expression"),
        pytest.param(_arm(resources=[{"type": "x", "apiVersion": "latest", "name": "[parameters('name')]"}]), id="bad-api-version"),
        pytest.param({k: v for k, v in MINIMAL_ARM.items() if k != "resources"}, id="no-resources"),
    ],
)
def test_checker_rejects_broken_arm_template(template: dict) -> None:
    with pytest.raises(CheckFailed):
        check_arm_template(template, "broken")


def test_checker_rejects_broken_json(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"id": "pool",\n', encoding="utf-8")
    with pytest.raises(CheckFailed):
        check_json(broken)


def test_checker_rejects_agent_enabled_vm_template() -> None:
    template = load_json(EXAMPLES / "vm" / "vm.json")
    vm = _resources_of_type(template, "Microsoft.Compute/virtualMachines")[0]
    vm["properties"]["osProfile"]["linuxConfiguration"]["provisionVMAgent"] = True
    with pytest.raises(CheckFailed, match="provisionVMAgent"):
        check_vm_template(template, "vm.json")


def test_checker_rejects_waagent_deprovisioning_in_image_builder() -> None:
    template = load_json(EXAMPLES / "image-builder" / "azprov-template.json")
    resource = _resources_of_type(template, "Microsoft.VirtualMachineImages/imageTemplates")[0]
    resource["properties"]["customize"] = [
        step for step in resource["properties"]["customize"] if step.get("name") != "replace-deprovisioning-script"
    ]
    with pytest.raises(CheckFailed, match="DeprovisioningScript"):
        check_image_builder_template(template, "azprov-template.json")


def test_checker_rejects_batch_pool_running_status_without_sudo() -> None:
    pool = load_json(EXAMPLES / "batch" / "pool.json")
    pool["startTask"]["commandLine"] = pool["startTask"]["commandLine"].replace("sudo -n azprov status --wait", "azprov status --wait")
    with pytest.raises(CheckFailed, match="sudo -n azprov status"):
        check_batch_pool(pool, "pool.json")


def test_checker_rejects_batch_pool_without_agent_sku() -> None:
    pool = load_json(EXAMPLES / "batch" / "pool.json")
    del pool["virtualMachineConfiguration"]["nodeAgentSKUId"]
    with pytest.raises(CheckFailed, match="nodeAgentSKUId"):
        check_batch_pool(pool, "pool.json")


GOOD_SCRIPT = '#!/usr/bin/env bash\nset -euo pipefail\nNAME="${1:-x}"\necho "$NAME"\n'


@pytest.mark.parametrize(
    "script",
    [
        pytest.param("#!/usr/bin/env bash\nset -euo pipefail\nif true; then\n  echo x\n", id="syntax"),
        pytest.param("#!/usr/bin/env bash\necho x\n", id="no-strict-mode"),
        pytest.param("#!/bin/sh\nset -euo pipefail\necho x\n", id="not-bash"),
        pytest.param(
            "#!/usr/bin/env bash\nset -euo pipefail\naz vm create -g rg -n vm \\\n  --image img\n",
            id="agent-not-disabled",
        ),
    ],
)
def test_checker_rejects_broken_shell(tmp_path: Path, script: str) -> None:
    broken = tmp_path / "broken.sh"
    broken.write_text(script, encoding="utf-8")
    with pytest.raises(CheckFailed):
        check_shell_syntax(broken)


def test_checker_accepts_good_shell(tmp_path: Path) -> None:
    good = tmp_path / "good.sh"
    good.write_text(GOOD_SCRIPT, encoding="utf-8")
    check_shell_syntax(good)
    if shutil.which("shellcheck"):
        check_shellcheck(good)


def test_checker_rejects_shellcheck_findings(tmp_path: Path) -> None:
    broken = tmp_path / "broken.sh"
    broken.write_text("#!/usr/bin/env bash\nset -euo pipefail\nrm -rf $1/data\n", encoding="utf-8")
    with pytest.raises(CheckFailed, match="SC2086"):
        check_shellcheck(broken)


GOOD_HCL = '''# comment with an unbalanced { brace
variable "a" {
  type    = string
  default = "x${var.b}y $${literal} {"
}

locals {
  text = <<-EOT
    a heredoc with { and " in it
  EOT
  list = ["a", "b"]
}
'''


def test_tokenizer_accepts_good_hcl() -> None:
    check_hcl_tokens(GOOD_HCL)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('variable "a" {\n  type = string\n', id="unclosed-brace"),
        pytest.param('x = "abc\ny = 1\n', id="unclosed-string"),
        pytest.param('x = ["a", "b"}\n', id="mismatched-bracket"),
        pytest.param('x = "${var.a"\n', id="unclosed-interpolation"),
        pytest.param("x = <<EOT\nno end\n", id="unclosed-heredoc"),
        pytest.param("/* comment\nx = 1\n", id="unclosed-comment"),
    ],
)
def test_tokenizer_rejects_broken_hcl(text: str) -> None:
    with pytest.raises(CheckFailed):
        check_hcl_tokens(text)


def test_packer_fmt_rejects_unformatted_hcl(tmp_path: Path) -> None:
    broken = tmp_path / "broken.pkr.hcl"
    broken.write_text('variable "a" {\ntype=string\n}\n', encoding="utf-8")
    with pytest.raises(CheckFailed, match="fmt"):
        check_packer_fmt(broken)


def test_packer_validate_rejects_unknown_block(tmp_path: Path) -> None:
    broken = tmp_path / "broken.pkr.hcl"
    broken.write_text('packer {\n}\n\nbiuld {\n  sources = []\n}\n', encoding="utf-8")
    with pytest.raises(CheckFailed, match="validate"):
        check_packer_validate_syntax(broken)


def test_packer_block_is_removed_for_validation() -> None:
    text = 'packer {\n  required_plugins {\n    a = {}\n  }\n}\n\nvariable "x" {\n}\n'
    assert _without_packer_block(text) == '\nvariable "x" {\n}\n'


def test_checker_rejects_drifted_guide_copy(tmp_path: Path) -> None:
    guide = tmp_path / "guide.md"
    example = "docs/examples/vm/create-vm.sh"
    body = (ROOT / example).read_text(encoding="utf-8")
    guide.write_text(f"<!-- example: {example} -->\n```bash\n{body}```\n", encoding="utf-8")
    assert check_embedded_examples(guide) == 1
    guide.write_text(f"<!-- example: {example} -->\n```bash\n{body}# drift\n```\n", encoding="utf-8")
    with pytest.raises(CheckFailed, match="differs"):
        check_embedded_examples(guide)


def test_checker_rejects_broken_link(tmp_path: Path) -> None:
    guide = tmp_path / "guide.md"
    guide.write_text("See [the other guide](missing.md).\n", encoding="utf-8")
    with pytest.raises(CheckFailed, match="broken link"):
        check_links(guide)


def test_checker_rejects_missing_anchor(tmp_path: Path) -> None:
    guide = tmp_path / "guide.md"
    guide.write_text("# Title\n\n## The `az` step, again\n\n[ok](#the-az-step-again)\n", encoding="utf-8")
    check_links(guide)
    guide.write_text("# Title\n\n[bad](#no-such-heading)\n", encoding="utf-8")
    with pytest.raises(CheckFailed, match="no heading"):
        check_links(guide)


def test_every_guide_ends_the_build_with_the_commands_the_bake_boot_test_runs() -> None:
    """tests/test_boot_bake.py runs capture.sh's remote commands verbatim in a booted build VM;
    the Packer and Image Builder examples (and the Image Builder guide's text) must run the same
    ones, so that the boot test vouches for them too."""
    from tests.support import guides

    remote = guides.capture_remote_commands()
    assert remote[-2:] == ["azprov check", "sync"] and "azprov deprovision --force --user" in remote
    assert guides.packer_last_inline() == remote
    # Image Builder runs as its build user, named in the script it writes ($BUILD_USER), after
    # checking that user itself: the same commands without the two SUDO_USER tests.
    generalize = [line for line in remote if not line.startswith("test ")]
    expected = "; ".join(generalize).replace('"$SUDO_USER"', "$BUILD_USER")
    assert guides.image_builder_deprovisioning() == expected
    guide = (GUIDES / "image-builder.md").read_text()
    assert f"sudo sh -exc '{expected.replace('$BUILD_USER', 'packer')}'" in guide
