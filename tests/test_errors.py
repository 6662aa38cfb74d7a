import datetime

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
