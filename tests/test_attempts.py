"""azprov.attempts: the provisioning history under /var/lib/azprov."""

from __future__ import annotations

import json
import os

from azprov import attempts
from azprov.errors import InvalidMetadata, Refused
from azprov.host import Host


def test_an_attempt_is_running_then_finished_in_place(scratch_root):
    host = Host(scratch_root)
    recorder = attempts.Recorder(host)
    recorder.begin("vm-1")
    (running,) = attempts.load(host)
    assert (running.outcome, running.vm_id, running.pid) == ("running", "vm-1", os.getpid())
    recorder.failed(InvalidMetadata("bad name", value="x"), "hostname", None)
    (failed,) = attempts.load(host)
    assert (failed.outcome, failed.step, failed.reason, failed.message, failed.vm_id) == (
        "failed", "hostname", "invalid_metadata", "bad name", "vm-1")
    assert failed.at == running.at and failed.finished_at is not None
    info = os.stat(host.path(attempts.HISTORY_FILE))
    assert oct(info.st_mode & 0o777) == "0o600"
    assert oct(os.stat(host.path("/var/lib/azprov")).st_mode & 0o777) == "0o700"


def test_refused_succeeded_and_discarded(scratch_root):
    host = Host(scratch_root)
    first = attempts.Recorder(host)
    first.begin()
    first.failed(Refused("pool VM"), "checks", "vm-1")
    second = attempts.Recorder(host)
    second.begin()
    second.succeeded("vm-1")
    third = attempts.Recorder(host)
    third.begin()
    third.discard()
    assert [a.outcome for a in attempts.load(host)] == ["refused", "succeeded"]
    assert attempts.last(host).vm_id == "vm-1"


def test_only_the_newest_are_kept(scratch_root):
    host = Host(scratch_root)
    for _ in range(attempts.KEEP + 5):
        recorder = attempts.Recorder(host)
        recorder.begin()
        recorder.succeeded("vm")
    assert len(attempts.load(host)) == attempts.KEEP


def test_a_damaged_history_counts_as_empty_and_is_replaced(scratch_root):
    host = Host(scratch_root)
    os.makedirs(host.path("/var/lib/azprov"), exist_ok=True)
    for junk in (b"{", b'{"attempts": [{"at": 1}]}', b"[]", b'{"attempts": [{"at": "t", "outcome": "won"}]}'):
        open(host.path(attempts.HISTORY_FILE), "wb").write(junk)
        assert attempts.load(host) == []
    recorder = attempts.Recorder(host)
    recorder.begin()
    assert json.load(open(host.path(attempts.HISTORY_FILE)))["attempts"][0]["outcome"] == "running"


def test_a_symlinked_history_is_not_followed(scratch_root, tmp_path):
    host = Host(scratch_root)
    os.makedirs(host.path("/var/lib/azprov"), exist_ok=True)
    target = tmp_path / "target"
    target.write_text("keep")
    os.symlink(target, host.path(attempts.HISTORY_FILE))
    assert attempts.load(host) == []
    attempts.Recorder(host).begin()  # refused, logged, not raised
    assert target.read_text() == "keep"


def test_warnings_are_kept_with_the_attempt_through_its_end(scratch_root):
    host = Host(scratch_root)
    recorder = attempts.Recorder(host)
    recorder.begin("vm")
    recorder.warn("password login was requested but no password was set")
    recorder.warn("x" * 2000)
    recorder.succeeded("vm")
    last = attempts.last(host)
    assert last.outcome == "succeeded"
    assert last.warnings[0] == "password login was requested but no password was set"
    assert len(last.warnings[1]) == 512 and last.warnings[1].endswith("...")
    for _ in range(20):
        recorder.warn("again")
    assert len(attempts.last(host).warnings) == 10


def test_warnings_that_are_not_strings_make_the_history_damaged(scratch_root):
    host = Host(scratch_root)
    path = host.path(attempts.HISTORY_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        json.dump({"attempts": [{"at": "2024-01-01T00:00:00+00:00", "outcome": "succeeded",
                                 "warnings": [1, 2]}]}, handle)
    assert attempts.load(host) == []
