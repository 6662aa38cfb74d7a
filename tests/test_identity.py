import logging
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from azprov.host import Host
from azprov.errors import ProtocolError
from azprov.identity import EFI_DIR, PRODUCT_UUID, gen1_swap, normalize_vm_id, read_dmi_vm_id, same_vm_id

DMI = "527c2691-029f-fe4c-b1f4-a4da7ebac2cf"  # as product_uuid reads on a Gen1 VM
IMDS = "91267c52-9f02-4cfe-b1f4-a4da7ebac2cf"  # the same VM's IMDS vmId


def machine(root: Path, product_uuid, gen2: bool = False) -> str:
    if product_uuid is not None:
        path = root / PRODUCT_UUID
        path.parent.mkdir(parents=True)
        path.write_bytes(product_uuid if isinstance(product_uuid, bytes) else product_uuid.encode())
    if gen2:
        (root / EFI_DIR).mkdir(parents=True)
    return str(root)


def test_gen1_swap_example():
    assert gen1_swap(DMI) == IMDS
    assert gen1_swap(IMDS) == DMI
    assert gen1_swap(DMI.upper()) == IMDS


@given(st.uuids())
def test_gen1_swap_is_its_own_inverse(value):
    text = str(value)
    if text.strip("0-") and text.strip("f-"):
        assert gen1_swap(gen1_swap(text)) == text


def test_gen1_swap_refuses_garbage():
    with pytest.raises(ProtocolError):
        gen1_swap("not-a-uuid")


def test_read_gen1_swaps(tmp_path):
    assert read_dmi_vm_id(Host(machine(tmp_path, DMI.upper() + "\n"))) == IMDS


def test_read_gen2_as_is(tmp_path):
    assert read_dmi_vm_id(Host(machine(tmp_path, IMDS.upper() + "\n", gen2=True))) == IMDS


def test_read_missing_file(tmp_path, caplog):
    with caplog.at_level(logging.DEBUG, logger="azprov.identity"):
        assert read_dmi_vm_id(Host(machine(tmp_path, None))) is None
    assert "no DMI product UUID" in caplog.text


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage\n", b"\xff\xfe\x00", b"00000000-0000-0000-0000-000000000000\n", DMI.encode() * 20,
     b"527c2691029ffe4cb1f4a4da7ebac2cf\n", ("{" + DMI + "}").encode()],
)
def test_read_invalid_content(tmp_path, caplog, content):
    with caplog.at_level(logging.WARNING, logger="azprov.identity"):
        assert read_dmi_vm_id(Host(machine(tmp_path, content))) is None
    assert "ignoring the DMI product UUID" in caplog.text


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files regardless of mode")
def test_read_unreadable(tmp_path, caplog):
    root = machine(tmp_path, DMI)
    (tmp_path / PRODUCT_UUID).chmod(0)
    with caplog.at_level(logging.WARNING, logger="azprov.identity"):
        assert read_dmi_vm_id(Host(root)) is None
    assert "cannot read" in caplog.text


def test_read_error_other_than_missing(tmp_path, caplog):
    (tmp_path / "sys/class/dmi").mkdir(parents=True)
    (tmp_path / "sys/class/dmi/id").write_text("a file where a directory should be")
    with caplog.at_level(logging.WARNING, logger="azprov.identity"):
        assert read_dmi_vm_id(Host(str(tmp_path))) is None
    assert "cannot read the DMI product UUID" in caplog.text


def test_read_directory_instead_of_file(tmp_path):
    (tmp_path / PRODUCT_UUID).mkdir(parents=True)
    assert read_dmi_vm_id(Host(str(tmp_path))) is None


def test_normalize():
    assert normalize_vm_id(f"  {IMDS.upper()}\n") == IMDS


@pytest.mark.parametrize(
    "value",
    ["", "x", IMDS[:-1], IMDS + "0", "{" + IMDS + "}", "urn:uuid:" + IMDS, IMDS.replace("-", ""),
     IMDS.replace("b", "g"), "00000000-0000-0000-0000-000000000000", "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
     "x" * 10_000],
)
def test_normalize_refuses(value):
    with pytest.raises(ProtocolError) as caught:
        normalize_vm_id(value)
    assert len(str(caught.value)) < 200


def test_normalize_refuses_non_strings():
    with pytest.raises(ProtocolError, match="int"):
        normalize_vm_id(42)  # type: ignore[arg-type]


def test_same_vm_id():
    assert same_vm_id(IMDS, IMDS)
    assert same_vm_id(DMI, IMDS)
    assert same_vm_id(IMDS, DMI)
    assert same_vm_id(DMI.upper(), f" {IMDS} ")
    assert not same_vm_id(IMDS, "c1b2a3d4-9f02-4cfe-b1f4-a4da7ebac2cf")
    assert not same_vm_id(None, IMDS)
    assert not same_vm_id(IMDS, None)
    assert not same_vm_id(None, None)
    assert not same_vm_id("garbage", "garbage")
