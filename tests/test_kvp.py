"""azprov.kvp: record encoding, UTF-8 cuts, replace in place, and locking against a real second
process (one holding hv_kvp_daemon's fcntl lock, one holding flock, and writers racing)."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import time

import pytest

from azprov import kvp
from azprov.errors import InvalidMetadata, StepFailed
from azprov.report import REPORT_CSV, encode_description, encode_fields, encode_success, fit_row, utf8_size
from support.reports import read_fields
from azprov.host import Host
from tests.support.cli import environment

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def host(tmp_path) -> Host:
    return Host(str(tmp_path))


def pool_bytes(host: Host) -> bytes:
    with open(host.path(kvp.POOL_FILE), "rb") as f:
        return f.read()


# --- encoding --------------------------------------------------------------------------------

def test_record_is_512_plus_2048_bytes_nul_padded():
    record = kvp.encode_record("PROVISIONING_REPORT", "result=success")
    assert len(record) == kvp.RECORD_SIZE == 2560
    assert record[:19] == b"PROVISIONING_REPORT" and set(record[19:512]) == {0}
    assert record[512:526] == b"result=success" and set(record[526:]) == {0}
    assert kvp.decode_record(record) == ("PROVISIONING_REPORT", "result=success")


@pytest.mark.parametrize("char", ["é", "€", "😀"])  # 2, 3 and 4 bytes
@pytest.mark.parametrize("offset", [0, 1, 2, 3])
def test_value_is_cut_at_1022_bytes_on_a_character_boundary(char, offset):
    value = "a" * (1020 + offset) + char * 10
    cut = kvp.cut_utf8(value, kvp.VALUE_LIMIT)
    assert len(cut) <= 1022
    assert 1022 - len(cut) < len(char.encode())  # as much as fits
    text = cut.decode("utf-8")  # never ends inside a character
    assert value.startswith(text)
    record = kvp.encode_record("K", value)
    assert record[512 + 1022:] == b"\0" * (2048 - 1022)  # NUL-terminated for C readers
    assert kvp.decode_record(record)[1] == text


def test_short_values_and_lone_surrogates_are_kept_or_replaced():
    assert kvp.cut_utf8("abc", 1022) == b"abc"
    assert kvp.cut_utf8("a\udcffb", 1022) == b"a?b"


def read_row(text: str) -> list:
    """A report row as a CSV reader reads it (from a file, as the host would)."""
    rows = list(csv.reader(io.StringIO(text, newline=""), **REPORT_CSV))
    assert len(rows) == 1, rows
    return rows[0]


def test_fields_are_quoted_as_cloud_init_quotes_them():
    # cloud-init: csv.writer(delimiter="|", quotechar="'", quoting=QUOTE_MINIMAL)
    fields = [("result", "error"), ("message", "a|b"), ("quote", "don't"), ("lines", "one\r\ntwo"),
              ("cr", "one\rtwo"), ("double", 'say "hi"'), ("plain", "x y")]
    text = encode_fields(fields)
    assert text == ("result=error|'message=a|b'|'quote=don''t'|'lines=one\r\ntwo'|'cr=one\rtwo'|"
                    'double=say "hi"|plain=x y')
    assert read_row(text) == [f"{k}={v}" for k, v in fields]
    assert read_fields(text) == fields


@pytest.mark.parametrize("value", ["a\u2028b", "a\u2029b", "a\x85b", "tab\there", "é€😀", "=", ""])
def test_other_characters_are_not_quoted_and_read_back(value):
    text = encode_fields([("k", value), ("next", "1")])
    assert text == f"k={value}|next=1"
    assert read_row(text) == [f"k={value}", "next=1"]


def test_a_long_report_is_shortened_by_fields_and_still_reads_as_csv():
    """The 1022-byte limit never falls inside a quoted field: the field that does not fit is
    shortened inside its quotes, the ones after it are dropped."""
    fields = [("result", "error"), ("reason", "x"), ("message", "it's\n" + "é|" * 600), ("vm_id", "v")]
    text = encode_fields(fields)
    assert utf8_size(text) > kvp.VALUE_LIMIT
    for cut in (fit_row(text, kvp.VALUE_LIMIT, utf8_size),
                encode_fields(fields, limit=kvp.VALUE_LIMIT, size=utf8_size)):
        assert kvp.VALUE_LIMIT - 4 <= utf8_size(cut) <= kvp.VALUE_LIMIT
        assert cut.endswith("...'")  # the quote is closed after the shortened message
        got = read_fields(cut)
        assert got[:2] == fields[:2] and got[2][0] == "message" and len(got) == 3
        assert fields[2][1].startswith(got[2][1][:-3])
        # A plain byte cut would have ended inside the quoted field: not a row as written.
        raw = kvp.cut_utf8(text, kvp.VALUE_LIMIT).decode()
        assert read_row(raw) != read_row(cut)


def test_the_report_written_to_the_pool_is_shortened_by_fields(tmp_path):
    host = Host(str(tmp_path))
    text = encode_fields([("result", "error"), ("message", "'" * 2000), ("vm_id", "v")])
    assert kvp.report(host, text)
    ((key, value),) = kvp.read_pool(host)
    assert key == "PROVISIONING_REPORT" and utf8_size(value) <= kvp.VALUE_LIMIT
    result, message = read_row(value)  # vm_id did not fit after the long message
    quotes = message.count("'")
    assert result == "result=error" and message == "message=" + "'" * quotes + "..." and quotes > 490


def test_a_field_that_cannot_be_shortened_to_fit_is_dropped():
    text = encode_fields([("a", "1"), ("long_key_name", "v" * 50)], limit=12)
    assert text == "a=1"
    assert encode_fields([("a", "1" * 50)], limit=10) == "a=11111..."


def test_success_report_format():
    import datetime

    when = datetime.datetime(2026, 11, 30, 12, 0, 1, 500, tzinfo=datetime.timezone.utc)
    assert encode_success(agent="azprov/0.1.0", vm_id="vm-1", timestamp=when) == \
        "result=success|agent=azprov/0.1.0|timestamp=2026-11-30T12:00:01+00:00|vm_id=vm-1"


def test_failure_report_fits_1022_bytes_with_its_identity_fields():
    error = InvalidMetadata("é" * 2000, detail="€" * 600)
    text = encode_description(error, agent="azprov/0.1.0", step="hostname", vm_id="vm-1",
                              limit=kvp.VALUE_LIMIT, size=utf8_size)
    assert utf8_size(text) <= 1022
    fields = read_row(text)
    assert fields[:4] == ["result=error", "reason=invalid_metadata", "agent=azprov/0.1.0", "step=hostname"]
    assert "vm_id=vm-1" in fields and fields[-1].startswith("documentation_url=")
    assert kvp.cut_utf8(text, kvp.VALUE_LIMIT) == text.encode()  # nothing left to cut


# --- the pool file ---------------------------------------------------------------------------

def test_creates_the_directory_and_the_file(host):
    kvp.write(host, "PROVISIONING_REPORT", "result=success")
    info = os.stat(host.path(kvp.POOL_FILE))
    assert oct(info.st_mode & 0o777) == "0o644"
    assert oct(os.stat(host.path(kvp.POOL_DIR)).st_mode & 0o777) == "0o755"
    assert kvp.read_pool(host) == [("PROVISIONING_REPORT", "result=success")]


def test_replaces_the_record_in_place_and_keeps_the_others(host):
    kvp.write(host, "OTHER", "1")
    kvp.write(host, "PROVISIONING_REPORT", "result=error|reason=a")
    kvp.write(host, "LATER", "2")
    kvp.write(host, "PROVISIONING_REPORT", "result=success")
    kvp.write(host, "PROVISIONING_REPORT", "result=success")
    assert kvp.read_pool(host) == [("OTHER", "1"), ("PROVISIONING_REPORT", "result=success"), ("LATER", "2")]
    assert len(pool_bytes(host)) == 3 * kvp.RECORD_SIZE


def test_duplicates_left_by_another_agent_are_dropped(host):
    os.makedirs(host.path(kvp.POOL_DIR))
    records = [("A", "1"), ("PROVISIONING_REPORT", "x1"), ("B", "2"), ("PROVISIONING_REPORT", "x2"), ("C", "3")]
    with open(host.path(kvp.POOL_FILE), "wb") as f:
        f.write(b"".join(kvp.encode_record(k, v) for k, v in records) + b"torn")
    inode = os.stat(host.path(kvp.POOL_FILE)).st_ino
    kvp.write(host, "PROVISIONING_REPORT", "new")
    assert kvp.read_pool(host) == [("A", "1"), ("PROVISIONING_REPORT", "new"), ("B", "2"), ("C", "3")]
    assert len(pool_bytes(host)) == 4 * kvp.RECORD_SIZE
    assert os.stat(host.path(kvp.POOL_FILE)).st_ino == inode, "rewritten in place, not replaced"


def test_refuses_a_symlink(host, tmp_path):
    os.makedirs(host.path(kvp.POOL_DIR))
    target = tmp_path / "elsewhere"
    target.write_bytes(b"")
    os.symlink(target, host.path(kvp.POOL_FILE))
    with pytest.raises(StepFailed, match="symbolic link"):
        kvp.write(host, "PROVISIONING_REPORT", "x")
    assert target.read_bytes() == b""
    assert kvp.report(host, "x") is False  # best effort: logged, not raised


# --- locking against real second processes ----------------------------------------------------

HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
if sys.argv[2] == "fcntl":   # hv_kvp_daemon: F_SETLKW on the whole file
    fcntl.lockf(fd, fcntl.LOCK_EX)
else:                        # cloud-init: flock
    fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(float(sys.argv[3]))
os.lseek(fd, 0, os.SEEK_END)
os.write(fd, bytes.fromhex(sys.argv[4]))
print("released", flush=True)
"""


@pytest.mark.parametrize("kind", ["fcntl", "flock"])
def test_waits_for_a_process_holding_the_lock(host, kind):
    kvp.write(host, "FIRST", "1")
    theirs = kvp.encode_record("THEIRS", "appended while holding the lock")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, host.path(kvp.POOL_FILE), kind, "1.0",
                               theirs.hex()], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        kvp.write(host, "PROVISIONING_REPORT", "result=success")
        waited = time.monotonic() - started
        assert holder.wait(timeout=10) == 0
    finally:
        holder.kill()
        holder.wait()
    assert waited >= 0.5, f"wrote after {waited:.2f} s while the other process held its {kind} lock"
    assert kvp.read_pool(host) == [("FIRST", "1"), ("THEIRS", "appended while holding the lock"),
                                   ("PROVISIONING_REPORT", "result=success")]


def test_gives_up_when_the_lock_is_never_released(host):
    kvp.write(host, "FIRST", "1")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, host.path(kvp.POOL_FILE), "fcntl", "30", ""],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StepFailed, match="stayed locked"):
            kvp.write(host, "PROVISIONING_REPORT", "x", wait=0.3)
    finally:
        holder.kill()
        holder.wait()
    assert kvp.read_pool(host) == [("FIRST", "1")]


WRITER = """
import sys
from azprov import kvp
from azprov.host import Host
host = Host(sys.argv[1])
for i in range(int(sys.argv[3])):
    kvp.write(host, "PROVISIONING_REPORT", f"{sys.argv[2]}-{i}")
    kvp.write(host, f"{sys.argv[2]}-{i % 5}", str(i))
"""


def test_concurrent_writers_leave_one_record_per_key(host):
    kvp.write(host, "START", "0")
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, host.root, name, "40"], env=environment())
               for name in ("a", "b", "c")]
    assert [w.wait(timeout=120) for w in writers] == [0, 0, 0]
    records = kvp.read_pool(host)
    keys = [k for k, _ in records]
    assert len(keys) == len(set(keys)), keys
    assert set(keys) == {"START", "PROVISIONING_REPORT"} | {f"{n}-{i}" for n in "abc" for i in range(5)}
    assert dict(records)["PROVISIONING_REPORT"] in {"a-39", "b-39", "c-39"}
    assert len(pool_bytes(host)) == len(records) * kvp.RECORD_SIZE


# --- properties (hypothesis; settings in support/strategies.py) ----------------------------------

from hypothesis import given, strategies as st  # noqa: E402

from support.strategies import ANY_TEXT, NASTY_CHAR, characters, fuzz  # noqa: E402

KEYISH = st.text(alphabet=st.one_of(characters(exclude_categories=("Cs",)), NASTY_CHAR), max_size=700)


@fuzz(200)
@given(KEYISH, st.integers(0, 2100))
def test_cut_utf8_never_exceeds_and_never_splits_a_character(text, limit):
    cut = kvp.cut_utf8(text, limit)
    assert len(cut) <= limit
    decoded = cut.decode("utf-8")  # raises if a character was split
    assert text.encode("utf-8", "replace").startswith(cut)
    if len(text.encode("utf-8", "replace")) > limit:
        assert limit - len(cut) < 4  # as much as fits: at most one character short
    else:
        assert decoded.encode() == text.encode("utf-8", "replace")


# Field text as a report row can hold it: anything but NUL, which never reaches a row (report._clean
# turns every C0 control into a space; a KVP value is NUL-terminated) and which Python 3.9's csv
# reader refuses outright ("line contains NUL"; 3.11 reads it).
ROW_TEXT = ANY_TEXT.map(lambda text: text.replace("\x00", " "))


@fuzz(200)
@given(st.lists(st.tuples(st.from_regex(r"[a-z_]{1,12}", fullmatch=True), ROW_TEXT), max_size=8))
def test_encoded_fields_read_back_with_a_csv_reader(fields):
    text = encode_fields(fields)
    rows = list(csv.reader(io.StringIO(text, newline=""), **REPORT_CSV))
    assert rows == ([[f"{k}={v}" for k, v in fields]] if fields else [])


@fuzz(200)
@given(st.lists(st.tuples(st.from_regex(r"[a-z_]{1,12}", fullmatch=True), ROW_TEXT.map(lambda t: t * 20)),
                min_size=1, max_size=8),
       st.integers(0, 1100))
def test_shortened_rows_read_back_as_a_prefix_of_the_fields(fields, limit):
    fields = [(k, v.replace("\ud800", "?").replace("\udfff", "?")) for k, v in fields]  # as _clean does
    text = encode_fields(fields, limit=limit, size=utf8_size)
    assert utf8_size(text) <= limit
    got = read_fields(text) if text else []
    whole = 0
    while whole < len(got) and got[whole] == fields[whole]:
        whole += 1
    assert len(got) - whole in (0, 1), (fields, got)  # whole fields, then maybe one shortened
    if whole < len(got):
        key, value = got[-1]
        assert key == fields[whole][0] and value.endswith("...")
        assert fields[whole][1].startswith(value[:-3])


@fuzz(100)
@given(KEYISH, KEYISH)
def test_records_round_trip_within_their_limits(key, value):
    record = kvp.encode_record(key, value)
    assert len(record) == kvp.RECORD_SIZE
    got_key, got_value = kvp.decode_record(record)
    assert got_key.encode() == kvp.cut_utf8(key, kvp.KEY_LIMIT).split(b"\0", 1)[0]
    assert got_value.encode() == kvp.cut_utf8(value, kvp.VALUE_LIMIT).split(b"\0", 1)[0]
