"""azprov.log: the console writer of ``azprov provision`` under systemd, and the journal once."""

from __future__ import annotations

import logging
import os
import pty
import select

import pytest

from azprov import log as azlog


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        if handler not in handlers:
            handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_console_lines_on_a_real_terminal():
    master, slave = pty.openpty()
    handler = azlog.ConsoleHandler(slave)
    logger = logging.getLogger("azprov.test.console")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info("step %s: started", "hostname")
        logger.warning("goal state: attempt 1 failed: HTTP 503; retrying in 0.40 s")
        logger.error("provisioning failed in step hostname:\nbad name")
        text = ""
        while text.count("\n") < 3 and select.select([master], [], [], 5)[0]:
            text += os.read(master, 4096).decode()
    finally:
        logger.removeHandler(handler)
        handler.close()
        os.close(master)
    lines = [line for line in text.replace("\r", "").split("\n") if line]
    assert lines == ["azprov: step hostname: started",
                     "azprov: warning: goal state: attempt 1 failed: HTTP 503; retrying in 0.40 s",
                     "azprov: error: provisioning failed in step hostname: bad name"]


def test_a_console_that_cannot_be_opened_is_skipped(tmp_path):
    assert azlog.ConsoleHandler.open(str(tmp_path / "missing" / "console")) is None


def test_provision_under_systemd_logs_to_the_journal_and_the_console(tmp_path, monkeypatch, restore_logging):
    pytest.importorskip("systemd.journal")
    console = tmp_path / "console"
    console.write_text("")
    monkeypatch.setattr(azlog, "CONSOLE", str(console))
    monkeypatch.setattr(azlog.ConsoleHandler, "open", classmethod(
        lambda cls, path=None: cls(os.open(str(console), os.O_WRONLY | os.O_APPEND))))
    assert azlog.setup_logging(0, service=True, console=True) == "journal"
    kinds = sorted(type(h).__name__ for h in logging.getLogger().handlers)
    assert kinds == ["ConsoleHandler", "JournalHandler"], "one journal handler: no stderr copy"
    logging.getLogger("azprov.http").info("goal state: attempt 2 failed: connection refused; retrying in 1.00 s")
    logging.getLogger("urllib3").info("not shown")
    assert console.read_text() == "azprov: goal state: attempt 2 failed: connection refused; retrying in 1.00 s\n"
    assert azlog.destination() == "journal"


def test_other_commands_and_terminals_get_no_console(restore_logging):
    azlog.setup_logging(0, service=True, console=False)
    assert "ConsoleHandler" not in [type(h).__name__ for h in logging.getLogger().handlers]
    assert azlog.setup_logging(1, service=False, console=True) == "stderr"
    assert [type(h).__name__ for h in logging.getLogger().handlers] == ["StreamHandler"]
