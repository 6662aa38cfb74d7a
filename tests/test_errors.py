import csv
import datetime
import importlib
import io
import pkgutil
import re
import string
from pathlib import Path
from typing import List

from hypothesis import example, given, note, strategies as st

import azprov
from azprov import errors
from azprov.errors import (
    DESCRIPTION_LIMIT,
    AzprovError,
    Busy,
    ConfigError,
    ExitCode,
    FabricUnreachable,
    HttpStatusError,
    InvalidMetadata,
    MissingRoleInstance,
    ProtocolError,
    Refused,
    StepFailed,
)
from azprov.report import REPORT_CSV, encode_description
from support.strategies import ANY_CHAR, ANY_TEXT, NASTY_CHAR, fuzz

# What never reaches a report: controls but tab and line breaks, lone surrogates, U+FFFE/U+FFFF.
UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff\ufffe\uffff]")
WHEN = datetime.datetime(2026, 11, 24, 12, 0, 0, 123, tzinfo=datetime.timezone.utc)


def test_description_fields_in_order():
    error = InvalidMetadata("computer name '../x' is not a valid hostname", value_length=4)
    text = encode_description(error, agent="azprov/0.1.0", step="hostname", vm_id="vm-1", timestamp=WHEN)
    assert text.split("|")[4:6] == ["value_length=4", "'message=computer name ''../x'' is not a valid hostname'"]
    assert fields_of(text) == [
        "result=error", "reason=invalid_metadata", "agent=azprov/0.1.0", "step=hostname",
        "value_length=4", "message=computer name '../x' is not a valid hostname", "vm_id=vm-1",
        "timestamp=2026-11-24T12:00:00+00:00",
        "documentation_url=https://aka.ms/linuxprovisioningerror",
    ]


def test_separators_and_line_breaks_are_quoted_and_cannot_forge_fields():
    error = Refused("a|reason=fake\r\nnext line\x1b[31m\x00")
    text = encode_description(error, agent="azprov", timestamp=WHEN)
    assert "|'message=a|reason=fake\r\nnext line [31m'|" in text  # escape and NUL: spaces, stripped
    fields = fields_of(text)
    assert [f for f in fields if f.startswith("reason=")] == ["reason=provisioning_refused"]
    assert "message=a|reason=fake\r\nnext line [31m" in fields


def test_long_messages_are_shortened_keeping_identity():
    error = Refused("x" * 2000, detail="y" * 600)
    text = encode_description(error, agent="azprov", vm_id="vm-1", timestamp=WHEN)
    assert len(text) <= DESCRIPTION_LIMIT
    assert "|vm_id=vm-1|timestamp=2026-11-24T12:00:00+00:00|" in text
    assert text.startswith("result=error|reason=provisioning_refused|")


def test_exit_codes_are_distinct():
    assert len({int(code) for code in ExitCode}) == len(ExitCode)
    assert Refused.exit_code == ExitCode.REFUSED


# -- the reason catalogue -------------------------------------------------------------------


ROOT = Path(__file__).resolve().parent.parent


def _azprov_error_classes():
    for module in pkgutil.walk_packages(azprov.__path__, "azprov."):
        if not module.name.endswith(".__main__"):  # runs the command when imported
            importlib.import_module(module.name)
    seen, pending = [], [errors.AzprovError]
    while pending:
        cls = pending.pop(0)
        if cls.__module__.startswith("azprov") and cls not in seen:
            seen.append(cls)
        pending.extend(cls.__subclasses__())
    return seen


def _man_page_reasons():
    text = (ROOT / "docs" / "azprov.8").read_text()
    section = text.split(".SH FAILURE REASONS\n", 1)[1].split("\n.SH ", 1)[0]
    rows = re.findall(r'^\.TP\n\.BR? (\S+)(?: " \(exit (\d+)\)")?$', section, re.M)
    return {name.replace("\\-", "-"): (int(code) if code else None) for name, code in rows}


def test_every_error_class_is_defined_in_errors_py():
    outside = [f"{c.__module__}.{c.__qualname__}" for c in _azprov_error_classes()
               if c.__module__ != "azprov.errors"]
    assert outside == []


def test_every_reason_is_unique():
    tokens = [c.reason for c in _azprov_error_classes()]
    assert sorted(tokens) == sorted(set(tokens))
    assert set(tokens) == set(errors.reasons())
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", token) for token in tokens)


def test_every_reason_is_in_the_man_page_with_its_exit_code():
    documented = _man_page_reasons()
    assert sorted(documented) == sorted(errors.reasons())
    for reason, cls in errors.reasons().items():
        if documented[reason] is not None:
            assert documented[reason] == int(cls.exit_code), reason


def test_family_reasons_are_never_raised_by_themselves():
    names = {errors.reasons()[reason].__name__ for reason in errors.FAMILY_REASONS}
    call = re.compile(r"\b(%s)\(" % "|".join(sorted(names)))
    for path in (ROOT / "azprov").rglob("*.py"):
        for line in path.read_text().splitlines():
            if call.search(line) and not line.lstrip().startswith("class "):
                raise AssertionError(f"{path}: {line.strip()}")


def _guides():
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_the_guides_quote_only_reasons_azprov_sends():
    sent = set(errors.reasons()) - errors.FAMILY_REASONS
    for path in _guides():
        text = path.read_text()
        quoted = set(re.findall(r"reason=([a-z][a-z0-9_]*)", text))
        quoted |= set(re.findall(r"`([a-z0-9]+(?:_[a-z0-9]+)+)`", text)) & set(errors.reasons())
        assert quoted <= sent, (path.name, sorted(quoted - sent))


def test_the_troubleshooting_table_gives_each_reason_its_exit_code():
    text = (ROOT / "docs" / "images" / "troubleshooting.md").read_text()
    table = text.split("| `reason` | Exit code |", 1)[1].split("\n\n", 1)[0]
    rows = [line.split("|")[1:3] for line in table.splitlines()[2:]]
    assert rows
    for reasons_cell, code in rows:
        for reason in re.findall(r"`([a-z0-9_]+)`", reasons_cell):
            assert int(errors.reasons()[reason].exit_code) == int(code), reason


# --------------------------------------------------------------------------------------------
# properties (hypothesis): strategies and conventions in support/strategies.py


ERROR_CLASSES = [AzprovError, ConfigError, FabricUnreachable, ProtocolError, InvalidMetadata,
                 StepFailed, Refused, Busy, MissingRoleInstance]

FIXED_KEYS = ("result", "reason", "agent", "step", "message", "vm_id", "timestamp",
              "documentation_url")


def _field_name(key: str) -> str:
    """The field name a detail key becomes (controls but tab and line breaks are spaces, then
    stripped)."""
    return UNSAFE.sub(" ", key).strip().split("=", 1)[0]


# Detail keys that do not collide with a fixed field (collisions have a test of their own below).
DETAIL_KEYS = st.one_of(
    st.from_regex(r"[a-z][a-z_]{0,15}", fullmatch=True),
    ANY_TEXT,
).filter(lambda key: _field_name(key) not in FIXED_KEYS)

DETAIL_VALUES = st.one_of(st.none(), ANY_TEXT, st.integers(), st.floats(), st.booleans(),
                          st.text(min_size=20, max_size=60).map(lambda s: s * 15))

TIMESTAMPS = st.one_of(
    st.none(),
    st.datetimes(timezones=st.just(datetime.timezone.utc)),
    st.datetimes(timezones=st.none() | st.builds(datetime.timezone, st.timedeltas(
        min_value=datetime.timedelta(hours=-23), max_value=datetime.timedelta(hours=23)))),
)

REALISTIC_VM_IDS = st.one_of(st.none(), st.uuids().map(str), st.just(""))
REALISTIC_STEPS = st.sampled_from([None, "hostname", "user", "ssh_keys", "sshd", "host_keys"])

REALISTIC_AGENTS = st.from_regex(r"azprov/[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(\+[a-z0-9.]{1,20})?",
                                 fullmatch=True)

LONG_TEXT = st.tuples(st.text(alphabet=st.one_of(ANY_CHAR, NASTY_CHAR), min_size=1, max_size=80),
                      st.integers(1, 40)).map(lambda pair: pair[0] * pair[1])


@st.composite
def azprov_errors(draw, message=st.one_of(ANY_TEXT, LONG_TEXT), detail_keys=DETAIL_KEYS):
    cls = draw(st.sampled_from(ERROR_CLASSES + [HttpStatusError]))
    details = draw(st.dictionaries(detail_keys, DETAIL_VALUES, max_size=6))
    text = draw(message)
    if cls is HttpStatusError:
        return HttpStatusError(text, draw(st.integers(100, 599)), **details)
    return cls(text, **details)


def fields_of(description: str) -> List[str]:
    rows = list(csv.reader(io.StringIO(description, newline=""), **REPORT_CSV))
    assert len(rows) == 1, rows  # one CSV row, whatever the values
    return rows[0]


def check_description_shape(error, text, vm_id, timestamp):
    assert isinstance(text, str)
    assert len(text) <= DESCRIPTION_LIMIT
    assert not UNSAFE.search(text)
    assert text.startswith(f"result=error|reason={error.reason}|")
    fields = fields_of(text)
    assert [f for f in fields if f.startswith("reason=")] == [f"reason={error.reason}"]
    assert fields[1] == f"reason={error.reason}"
    vm_fields = [f for f in fields if f.startswith("vm_id=")]
    assert vm_fields == [f"vm_id={(vm_id or 'unknown').strip()}"]
    stamps = [f for f in fields if f.startswith("timestamp=")]
    assert len(stamps) == 1
    if timestamp is not None:
        assert stamps[0] == f"timestamp={timestamp.replace(microsecond=0).isoformat()}"
    else:
        assert datetime.datetime.fromisoformat(stamps[0][len("timestamp="):]).tzinfo is not None


@fuzz(150)
@example(Refused("x" * 5000, detail="y" * 600), "azprov/0.1.0", "hostname", "vm-1", None, {})
@given(azprov_errors(), REALISTIC_AGENTS, REALISTIC_STEPS, REALISTIC_VM_IDS, TIMESTAMPS,
       st.dictionaries(DETAIL_KEYS, DETAIL_VALUES, max_size=3))
def test_description_shape(error, agent, step, vm_id, timestamp, extra):
    text = encode_description(error, agent=agent, step=step, vm_id=vm_id, timestamp=timestamp,
                              extra=extra)
    note(text)
    check_description_shape(error, text, vm_id, timestamp)


@fuzz(150)
@given(azprov_errors(), ANY_TEXT,
       st.one_of(st.none(), ANY_TEXT), st.one_of(st.none(), ANY_TEXT), TIMESTAMPS,
       st.text(alphabet=st.one_of(ANY_CHAR, NASTY_CHAR), min_size=1, max_size=60).map(lambda s: s * 10))
def test_description_length_with_any_fixed_fields(error, agent, step, vm_id, timestamp, huge):
    for fields in ({"agent": agent + huge}, {"step": (step or "") + huge}, {"vm_id": huge}, {}):
        arguments = {"agent": agent, "step": step, "vm_id": vm_id, "timestamp": timestamp, **fields}
        text = encode_description(error, **arguments)
        assert len(text) <= DESCRIPTION_LIMIT
        assert not UNSAFE.search(text)
        assert text.startswith("result=error|reason=")
        fields_of(text)


@fuzz(50)
@example(Refused("m", reason="forged"), "azprov/0.1.0", None, "vm-1", None, {})
@given(azprov_errors(detail_keys=st.one_of(DETAIL_KEYS, st.sampled_from(FIXED_KEYS))),
       REALISTIC_AGENTS, REALISTIC_STEPS, REALISTIC_VM_IDS, TIMESTAMPS,
       st.dictionaries(st.sampled_from(FIXED_KEYS), DETAIL_VALUES, max_size=2))
def test_description_fixed_fields_cannot_be_duplicated_by_details(error, agent, step, vm_id,
                                                                   timestamp, extra):
    text = encode_description(error, agent=agent, step=step, vm_id=vm_id, timestamp=timestamp,
                              extra=extra)
    fields = fields_of(text)
    for key in ("result", "reason", "agent", "vm_id", "timestamp", "documentation_url"):
        assert len([f for f in fields if f.startswith(key + "=")]) == 1, (key, text)


@fuzz(50)
@example(Refused("first\x85second\u2028third\x9b[31m\r\nfourth"), "azprov/0.1.0", None, "vm-1", None)
@given(azprov_errors(), REALISTIC_AGENTS, REALISTIC_STEPS, REALISTIC_VM_IDS, TIMESTAMPS)
def test_description_keeps_line_breaks_in_quoted_fields_and_drops_controls(error, agent, step, vm_id, timestamp):
    text = encode_description(error, agent=agent, step=step, vm_id=vm_id, timestamp=timestamp)
    assert not UNSAFE.search(text)
    message = dict(field.split("=", 1) for field in fields_of(text))["message"]
    cleaned = UNSAFE.sub(" ", error.message).strip()
    # Read back exactly as it was (line breaks included), or shortened with "..."
    assert message == cleaned or (message.endswith("...") and cleaned.startswith(message[:-3]))


@fuzz(50)
@example(Refused("m"), "azprov/0.1.0", None, "v" * 600, None)
@given(azprov_errors(), REALISTIC_AGENTS, REALISTIC_STEPS,
       st.text(alphabet=string.hexdigits + "-", min_size=0, max_size=700), TIMESTAMPS)
def test_description_keeps_vm_id_and_timestamp_whatever_the_vm_id(error, agent, step, vm_id,
                                                                  timestamp):
    text = encode_description(error, agent=agent, step=step, vm_id=vm_id, timestamp=timestamp)
    fields = fields_of(text)
    assert any(f.startswith("vm_id=") for f in fields)
    assert any(f.startswith("timestamp=") for f in fields)


@fuzz(50)
@example(StepFailed("cannot write /home/\udcff/.ssh"), "azprov/0.1.0")
@given(azprov_errors(), REALISTIC_AGENTS)
def test_description_is_utf8_encodable(error, agent):
    encode_description(error, agent=agent).encode("utf-8")
