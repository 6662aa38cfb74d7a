"""Scenarios: what the emulated fabric says about the VM, and which faults it plays.

A scenario is a plain mapping (from Python, a ``.json`` or a ``.toml`` file).  It is checked
strictly when loaded: an unknown key, a wrong type or a meaningless combination is a
:class:`ScenarioError` naming the key, so a misspelled fault never silently does nothing.
The format is documented in docs/fabric-emulator.md.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from azprov.errors import ScenarioError
from azprov.fabric import values as read
from azprov.fabric.instance import ImdsSettings, instance_document
from azprov.tomltext import parse_toml


# Endpoints a scenario can script, and the keys their steps accept.
STEP_ENDPOINTS = ("goalstate", "health", "provisioning_health", "imds")
_COMMON_STEP_KEYS = frozenset({
    "status", "body", "body_file", "headers", "retry_after", "delay", "drop", "truncate",
    "trickle", "repeat", "oversize",
})
_MOVE_KEYS = frozenset({"new_incarnation", "new_container_id", "new_instance_id"})
_STEP_KEYS = {
    "goalstate": _COMMON_STEP_KEYS | {"no_role_instance"} | _MOVE_KEYS,
    "health": _COMMON_STEP_KEYS | _MOVE_KEYS,
    "provisioning_health": _COMMON_STEP_KEYS,
    "imds": _COMMON_STEP_KEYS,
}
_TOP_KEYS = frozenset({
    "description", "incarnation", "container_id", "instance_id", "vm_id", "vm_name",
    "computer_name", "admin_username", "public_keys", "wireserver", "imds", "goalstate",
    "health", "provisioning_health", "rate_limit", "admin_password", "custom_data", "user_data",
    "disable_password_authentication", "extensions", "provision_guest_agent",
})
_LISTENER_KEYS = frozenset({"refuse_for", "unavailable_for", "retry_after"})
_IMDS_KEYS = _LISTENER_KEYS | {
    "api_versions", "compute", "extended", "document", "raw_body", "remove", "steps",
}
_RATE_LIMIT_KEYS = frozenset({"requests_per_second", "burst", "retry_after"})


# --- the model ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    """One scripted response; it answers ``repeat`` consecutive requests of its endpoint."""

    status: Optional[int] = None  # None: the normal status
    body: Optional[bytes] = None  # None: the normal body (or a short error body for a non-2xx status)
    headers: Tuple[Tuple[str, str], ...] = ()
    retry_after: Optional[str] = None
    delay: float = 0.0
    drop: bool = False
    truncate: Optional[int] = None  # bytes of the body actually sent; -1: half of it
    trickle: Optional[float] = None  # bytes per second
    repeat: int = 1
    oversize: Optional[int] = None  # pad the body to at least this many bytes
    no_role_instance: bool = False
    new_incarnation: Optional[int] = None
    bump_incarnation: bool = False  # new_incarnation = true: the served incarnation + 1
    new_container_id: Optional[str] = None
    new_instance_id: Optional[str] = None

    @property
    def moves_goal_state(self) -> bool:
        return bool(
            self.bump_incarnation or self.new_incarnation is not None
            or self.new_container_id or self.new_instance_id
        )

    def describe(self) -> str:
        """The step's actions as ``key=value`` words, for the request log."""
        words = []
        if self.status is not None:
            words.append(f"status={self.status}")
        if self.body is not None:
            words.append(f"body={len(self.body)}B")
        for name in ("retry_after", "oversize", "trickle", "new_container_id", "new_instance_id"):
            value = getattr(self, name)
            if value is not None:
                words.append(f"{name}={value}")
        if self.delay:
            words.append(f"delay={self.delay:g}")
        if self.drop:
            words.append("drop")
        if self.truncate is not None:
            words.append("truncate" if self.truncate < 0 else f"truncate={self.truncate}")
        if self.no_role_instance:
            words.append("no_role_instance")
        if self.bump_incarnation:
            words.append("new_incarnation=+1")
        elif self.new_incarnation is not None:
            words.append(f"new_incarnation={self.new_incarnation}")
        if self.headers:
            words.append("headers=" + ",".join(name for name, _ in self.headers))
        return " ".join(words) or "normal"

    @classmethod
    def from_dict(cls, data: Any, endpoint: str, where: str, base_dir: Optional[Path] = None) -> "Step":
        table = read.table(data, where)
        read.check_keys(table, _STEP_KEYS[endpoint], where)
        values: Dict[str, Any] = {}
        if "status" in table:
            values["status"] = read.integer(table["status"], f"{where}.status", 100, 599)
        if "body" in table and "body_file" in table:
            raise ScenarioError(f"scenario: {where}: give body or body_file, not both")
        if "body" in table:
            values["body"] = read.string(table["body"], f"{where}.body", empty_ok=True).encode("utf-8")
        if "body_file" in table:
            values["body"] = read.read_file(table["body_file"], f"{where}.body_file", base_dir)
        if "headers" in table:
            headers = []
            for name, value in read.table(table["headers"], f"{where}.headers").items():
                text = read.string(value, f"{where}.headers.{name}", empty_ok=True)
                if not name or any(c in name for c in " \t\r\n:") or any(c in text for c in "\r\n"):
                    raise ScenarioError(f"scenario: {where}.headers.{name}: not a valid header")
                headers.append((name, text))
            values["headers"] = tuple(headers)
        if "retry_after" in table:
            values["retry_after"] = read.retry_after(table["retry_after"], f"{where}.retry_after")
        if "delay" in table:
            values["delay"] = read.number(table["delay"], f"{where}.delay")
        if "drop" in table:
            values["drop"] = read.boolean(table["drop"], f"{where}.drop")
        if "truncate" in table:
            value = table["truncate"]
            if isinstance(value, bool):
                if value:
                    values["truncate"] = -1
            else:
                values["truncate"] = read.integer(value, f"{where}.truncate")
        if "trickle" in table:
            values["trickle"] = read.number(table["trickle"], f"{where}.trickle", positive=True)
        if "repeat" in table:
            values["repeat"] = read.integer(table["repeat"], f"{where}.repeat", 1)
        if "oversize" in table:
            values["oversize"] = read.integer(table["oversize"], f"{where}.oversize", 1)
        if "no_role_instance" in table:
            values["no_role_instance"] = read.boolean(table["no_role_instance"], f"{where}.no_role_instance")
        if "new_incarnation" in table:
            value = table["new_incarnation"]
            if value is True:
                values["bump_incarnation"] = True
            else:
                values["new_incarnation"] = read.integer(value, f"{where}.new_incarnation")
        for name in ("new_container_id", "new_instance_id"):
            if name in table:
                values[name] = read.string(table[name], f"{where}.{name}")
        if values.get("drop"):
            extra = sorted(set(table) - {"drop", "delay", "repeat"})
            if extra:
                raise ScenarioError(
                    f"scenario: {where}: drop closes the connection without an answer; "
                    f"it cannot be combined with {', '.join(extra)}"
                )
        if values.get("no_role_instance") and "body" in values:
            raise ScenarioError(f"scenario: {where}: no_role_instance alters the normal body; "
                                "it cannot be combined with body/body_file")
        return cls(**values)


@dataclass(frozen=True)
class Listener:
    """Listener-level faults of one endpoint (WireServer or IMDS)."""

    refuse_for: float = 0.0  # seconds after start with nothing listening: connection refused
    unavailable_for: float = 0.0  # seconds after start answering 503
    retry_after: Optional[str] = None  # Retry-After on those 503s

    @classmethod
    def from_table(cls, table: dict, where: str) -> "Listener":
        values: Dict[str, Any] = {}
        for name in ("refuse_for", "unavailable_for"):
            if name in table:
                values[name] = read.number(table[name], f"{where}.{name}")
        if "retry_after" in table:
            values["retry_after"] = read.retry_after(table["retry_after"], f"{where}.retry_after")
        return cls(**values)


@dataclass(frozen=True)
class RateLimit:
    """A token bucket over every WireServer and IMDS request."""

    requests_per_second: float
    burst: int
    retry_after: str = "1"


@dataclass(frozen=True)
class Scenario:
    """Everything the emulator needs to know; ``Scenario()`` is the healthy default fabric."""

    description: str = ""
    incarnation: int = 1
    container_id: Optional[str] = None  # None: the emulator's fixed default
    instance_id: Optional[str] = None  # None: "<fixed uuid>._<vm_name>"
    vm_id: Optional[str] = None
    vm_name: Optional[str] = None
    computer_name: Optional[str] = None
    admin_username: Optional[str] = None
    public_keys: Optional[Tuple[Tuple[str, Optional[str]], ...]] = None  # (keyData, path or None)
    # The provisioning disc (azprov fabric disc) and what IMDS says of it:
    admin_password: Optional[str] = field(default=None, repr=False)
    custom_data: Optional[str] = field(default=None, repr=False)  # text; base64 on the disc
    user_data: Optional[str] = None  # text; base64 in IMDS compute.userData
    disable_password_authentication: Optional[bool] = None  # None: false with a password
    # VM extensions the goal state's ExtensionsConfig asks for: (name, version) each; a string
    # "Publisher.Type" or "Publisher.Type@1.2.3" in a scenario file
    extensions: Tuple[Tuple[str, str], ...] = ()
    provision_guest_agent: bool = False  # ProvisionGuestAgent on the provisioning disc
    wireserver: Listener = field(default_factory=Listener)
    imds_listener: Listener = field(default_factory=Listener)
    imds: ImdsSettings = field(default_factory=ImdsSettings)
    steps: Dict[str, Tuple[Step, ...]] = field(default_factory=dict)
    rate_limit: Optional[RateLimit] = None
    source: Optional[str] = None  # the file it came from, if any

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], base_dir: Union[str, Path, None] = None, source: Optional[str] = None
    ) -> "Scenario":
        """Check ``data`` strictly and build the scenario; ``body_file`` paths are relative to
        ``base_dir`` (default: the current directory)."""
        base = Path(base_dir) if base_dir is not None else None
        if not isinstance(data, Mapping):
            raise ScenarioError(f"scenario: the top level must be a table/object, not {type(data).__name__}")
        table = dict(data)
        read.check_keys(table, _TOP_KEYS, "")
        values: Dict[str, Any] = {"source": source}
        if "description" in table:
            values["description"] = read.string(table["description"], "description", empty_ok=True)
        if "incarnation" in table:
            values["incarnation"] = read.integer(table["incarnation"], "incarnation")
        for name in ("container_id", "instance_id", "vm_id", "vm_name", "computer_name", "admin_username"):
            if name in table:
                values[name] = read.string(table[name], name)
        if "public_keys" in table:
            values["public_keys"] = _public_keys(table["public_keys"])
        for name in ("admin_password", "custom_data", "user_data"):
            if name in table:
                values[name] = read.string(table[name], name, empty_ok=name != "admin_password")
        if "disable_password_authentication" in table:
            values["disable_password_authentication"] = read.boolean(
                table["disable_password_authentication"], "disable_password_authentication")
        if "provision_guest_agent" in table:
            values["provision_guest_agent"] = read.boolean(table["provision_guest_agent"], "provision_guest_agent")
        if "extensions" in table:
            values["extensions"] = _extensions(table["extensions"])
        if "wireserver" in table:
            wireserver = read.table(table["wireserver"], "wireserver")
            read.check_keys(wireserver, _LISTENER_KEYS, "wireserver")
            values["wireserver"] = Listener.from_table(wireserver, "wireserver")

        steps: Dict[str, Tuple[Step, ...]] = {}
        imds = table.get("imds")
        if isinstance(imds, list):  # shorthand: the list of IMDS steps
            imds = {"steps": imds}
        if imds is not None:
            imds = read.table(imds, "imds")
            read.check_keys(imds, _IMDS_KEYS, "imds")
            values["imds_listener"] = Listener.from_table(imds, "imds")
            values["imds"] = _imds_settings(imds)
            if "steps" in imds:
                steps["imds"] = _steps(imds["steps"], "imds", "imds.steps", base)
        for endpoint in ("goalstate", "health", "provisioning_health"):
            if endpoint in table:
                steps[endpoint] = _steps(table[endpoint], endpoint, endpoint, base)
        values["steps"] = steps
        if "rate_limit" in table:
            values["rate_limit"] = _rate_limit(table["rate_limit"])
        scenario = cls(**values)
        if scenario.imds.remove:  # a path that is not in the document is a typo: say so now
            scenario.imds_document(extended=True)
        return scenario

    @property
    def password_authentication_disabled(self) -> bool:
        if self.disable_password_authentication is not None:
            return self.disable_password_authentication
        return self.admin_password is None

    def imds_document(self, extended: bool) -> Dict[str, Any]:
        """The IMDS instance document this scenario serves."""
        return instance_document(
            self.imds, extended, vm_id=self.vm_id, vm_name=self.vm_name, computer_name=self.computer_name,
            admin_username=self.admin_username, public_keys=self.public_keys,
            password_authentication_disabled=self.password_authentication_disabled,
            user_data=self.user_data, has_custom_data=self.custom_data is not None)

    def steps_for(self, endpoint: str) -> Tuple[Step, ...]:
        return self.steps.get(endpoint, ())


def _steps(value: Any, endpoint: str, where: str, base_dir: Optional[Path]) -> Tuple[Step, ...]:
    if not isinstance(value, list):
        raise ScenarioError(f"scenario: {where} must be a list of steps, not {type(value).__name__}")
    return tuple(Step.from_dict(item, endpoint, f"{where}[{index}]", base_dir) for index, item in enumerate(value))


def _extensions(value: Any) -> Tuple[Tuple[str, str], ...]:
    if not isinstance(value, list):
        raise ScenarioError(f"scenario: extensions must be a list of strings, not {type(value).__name__}")
    found = []
    for index, item in enumerate(value):
        name, _, version = read.string(item, f"extensions[{index}]").partition("@")
        found.append((name, version or "1.0.0"))
    return tuple(found)


def _public_keys(value: Any) -> Tuple[Tuple[str, Optional[str]], ...]:
    if not isinstance(value, list):
        raise ScenarioError("scenario: public_keys must be a list of key lines or {keyData, path} tables")
    keys: List[Tuple[str, Optional[str]]] = []
    for index, item in enumerate(value):
        where = f"public_keys[{index}]"
        if isinstance(item, str):
            keys.append((item, None))
            continue
        entry = read.table(item, where)
        read.check_keys(entry, frozenset({"keyData", "path"}), where)
        if "keyData" not in entry:
            raise ScenarioError(f"scenario: {where} has no keyData")
        path = read.string(entry["path"], f"{where}.path", empty_ok=True) if "path" in entry else None
        keys.append((read.string(entry["keyData"], f"{where}.keyData", empty_ok=True), path))
    return tuple(keys)


def _imds_settings(table: dict) -> ImdsSettings:
    values: Dict[str, Any] = {}
    if "api_versions" in table:
        versions = table["api_versions"]
        if not isinstance(versions, list) or not versions:
            raise ScenarioError("scenario: imds.api_versions must be a non-empty list of version strings")
        values["api_versions"] = tuple(read.string(v, f"imds.api_versions[{i}]") for i, v in enumerate(versions))
    for name in ("compute", "extended", "document"):
        if name in table:
            values[name] = json.loads(json.dumps(read.table(table[name], f"imds.{name}")))  # a private copy
    if "raw_body" in table:
        values["raw_body"] = read.string(table["raw_body"], "imds.raw_body", empty_ok=True).encode("utf-8")
    if "remove" in table:
        remove = table["remove"]
        if not isinstance(remove, list):
            raise ScenarioError("scenario: imds.remove must be a list of dotted paths")
        values["remove"] = tuple(read.string(p, f"imds.remove[{i}]") for i, p in enumerate(remove))
    if "document" in values and ({"compute", "extended"} & set(values)):
        raise ScenarioError("scenario: imds.document replaces the whole document; "
                            "it cannot be combined with imds.compute or imds.extended")
    if "raw_body" in values and ({"compute", "extended", "document", "remove"} & set(values)):
        raise ScenarioError("scenario: imds.raw_body is served as-is; it cannot be combined with "
                            "imds.compute, imds.extended, imds.document or imds.remove")
    return ImdsSettings(**values)


def _rate_limit(value: Any) -> RateLimit:
    table = read.table(value, "rate_limit")
    read.check_keys(table, _RATE_LIMIT_KEYS, "rate_limit")
    if "requests_per_second" not in table:
        raise ScenarioError("scenario: rate_limit needs requests_per_second")
    rate = read.number(table["requests_per_second"], "rate_limit.requests_per_second", positive=True)
    burst = read.integer(table["burst"], "rate_limit.burst", 1) if "burst" in table else max(1, math.ceil(rate))
    retry_after = read.retry_after(table["retry_after"], "rate_limit.retry_after") if "retry_after" in table else "1"
    return RateLimit(rate, burst, retry_after)


def load_scenario(path: Union[str, Path]) -> Scenario:
    """Read a ``.json`` or ``.toml`` scenario file; relative ``body_file`` paths are relative to it."""
    path = Path(path)
    data = scenario_data(path)
    try:
        return Scenario.from_dict(data, base_dir=path.parent, source=str(path))
    except ScenarioError as exc:
        raise ScenarioError(f"{path}: {exc}") from None


def scenario_data(path: Union[str, Path]) -> Dict[str, Any]:
    """The top-level table of a ``.json`` or ``.toml`` scenario file, not yet checked."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ScenarioError(f"scenario {path}: cannot read it: {exc.strerror or exc}") from None
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ScenarioError(f"scenario {path}: not valid JSON: {exc}") from None
    elif suffix == ".toml":
        try:
            data = parse_toml(raw)
        except ValueError as exc:
            raise ScenarioError(f"scenario {path}: {exc}") from None
    else:
        raise ScenarioError(f"scenario {path}: unknown file type {suffix or '(none)'!r}; use .json or .toml")
    if not isinstance(data, dict):
        raise ScenarioError(f"scenario {path}: the top level must be an object")
    return data
