"""State file and run lock, on a scratch root."""

from __future__ import annotations

import json
import os
import stat

import pytest

from azprov import state
from azprov.errors import Busy
from azprov.host import Host
from support.fakes import FakeClock


def sample(**changes) -> state.State:
    values = dict(vm_id="8b1e4c3d-52a7-4f6e-9c80-d3a2b7e615f4", incarnation=3, container_id="c-1",
                  instance_id="i-1._vm", ready_at="2024-05-01T10:00:00+00:00",
                  steps=("hostname", "user"), hostname="vm1", admin_username="azureuser")
    values.update(changes)
    return state.State(**values)


def test_round_trip_with_private_modes(scratch_root):
    host = Host(scratch_root)
    assert state.load(host) is None
    assert state.save(host, sample()) is True
    assert state.load(host) == sample()
    directory = os.stat(host.path(state.STATE_DIR))
    path = os.stat(host.path(state.STATE_FILE))
    assert stat.S_IMODE(directory.st_mode) == 0o700 and stat.S_IMODE(path.st_mode) == 0o600
    data = json.loads(open(host.path(state.STATE_FILE)).read())
    assert data["version"] and data["steps"] == ["hostname", "user"]
    assert state.save(host, sample()) is False  # unchanged


def test_a_loose_state_directory_is_tightened(scratch_root):
    host = Host(scratch_root)
    os.makedirs(host.path(state.STATE_DIR), mode=0o755)
    state.save(host, sample())
    assert stat.S_IMODE(os.stat(host.path(state.STATE_DIR)).st_mode) == 0o700


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b'{"vm_id": "x"}',
                                     b'{"vm_id": 1, "incarnation": 1, "container_id": "c", '
                                     b'"instance_id": "i", "ready_at": "t"}'])
def test_a_damaged_state_counts_as_absent(scratch_root, content, caplog):
    host = Host(scratch_root)
    os.makedirs(host.path(state.STATE_DIR))
    open(host.path(state.STATE_FILE), "wb").write(content)
    assert state.load(host) is None
    assert "ignoring" in caplog.text


def test_unknown_fields_from_a_newer_version_are_ignored(scratch_root):
    host = Host(scratch_root)
    os.makedirs(host.path(state.STATE_DIR))
    data = json.loads(sample().to_json())
    data["future"] = {"x": 1}
    open(host.path(state.STATE_FILE), "w").write(json.dumps(data))
    assert state.load(host) == sample()


def test_a_symlinked_state_file_is_not_trusted(scratch_root, tmp_path):
    host = Host(scratch_root)
    os.makedirs(host.path(state.STATE_DIR))
    elsewhere = tmp_path / "planted.json"
    elsewhere.write_bytes(sample().to_json())
    os.symlink(str(elsewhere), host.path(state.STATE_FILE))
    assert state.load(host) is None


def test_clear(scratch_root):
    host = Host(scratch_root)
    state.save(host, sample())
    assert state.clear(host) is True and state.clear(host) is False


def test_the_lock_keeps_a_second_run_out_for_a_bounded_time(scratch_root):
    host = Host(scratch_root)
    clock = FakeClock()
    with state.acquire(host, wait=1):
        lock_path = host.path(state.LOCK_FILE)
        assert stat.S_IMODE(os.stat(os.path.dirname(lock_path)).st_mode) == 0o700
        with pytest.raises(Busy) as caught:
            state.acquire(host, wait=3, clock=clock, sleep=clock.sleep)
        assert caught.value.exit_code == 8
        assert 3 <= sum(clock.sleeps) <= 3.4
    with state.acquire(host, wait=0):  # released: free again
        pass


def test_the_lock_directory_is_private_but_a_missing_run_is_not(tmp_path):
    host = Host(str(tmp_path))
    with state.acquire(host, wait=0):
        assert stat.S_IMODE(os.stat(host.path("/run")).st_mode) == 0o755
        assert stat.S_IMODE(os.stat(host.path("/run/azprov")).st_mode) == 0o700


@pytest.mark.parametrize("trap", ["dir-link", "file-link", "file-dir"])
def test_check_refuses_a_state_path_save_would_refuse(scratch_root, tmp_path, trap):
    from azprov import errors

    host = Host(scratch_root)
    state_dir = host.path(state.STATE_DIR)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if trap == "dir-link":
        os.symlink(str(elsewhere), state_dir)
    else:
        os.mkdir(state_dir, 0o700)
        if trap == "file-link":
            os.symlink("/etc/shadow", host.path(state.STATE_FILE))
        else:
            os.mkdir(host.path(state.STATE_FILE))
    with pytest.raises(errors.UnsafePath):
        state.check(host)
    assert os.listdir(str(elsewhere)) == []
