import datetime
import importlib
import pkgutil
import re
from pathlib import Path

import azprov
from azprov import errors
from azprov.errors import DESCRIPTION_LIMIT, ExitCode, InvalidMetadata, Refused, encode_description

WHEN = datetime.datetime(2026, 11, 24, 12, 0, 0, 123, tzinfo=datetime.timezone.utc)


def test_description_fields_in_order():
    error = InvalidMetadata("computer name '../x' is not a valid hostname", value_length=4)
    text = encode_description(error, agent="azprov/0.1.0", step="hostname", vm_id="vm-1", timestamp=WHEN)
    assert text.split("|") == [
        "result=error", "reason=invalid_metadata", "agent=azprov/0.1.0", "step=hostname",
        "value_length=4", "message=computer name '../x' is not a valid hostname", "vm_id=vm-1",
        "timestamp=2026-11-24T12:00:00+00:00",
        "documentation_url=https://aka.ms/linuxprovisioningerror",
    ]


def test_separators_and_control_characters_cannot_forge_fields():
    error = Refused("a|reason=fake\nnext line")
    text = encode_description(error, agent="azprov", timestamp=WHEN)
    assert "reason=fake" in text and text.count("|reason=") == 1
    assert "\n" not in text


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
