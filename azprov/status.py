"""``azprov status``: what azprov provisioned here, its last attempt, and whether an image
captured now would provision.  ``--wait`` blocks while azprov.service runs, then exits 0 when this
VM is provisioned and 1 when it is not (the last attempt failed or was refused), like
``cloud-init status --wait``: for Packer steps, scale-set and Batch start tasks.

Whether an image captured now would provision is ``azprov check``'s verdict, not a judgement of
its own: status runs the same checks (:func:`azprov.check.run_checks`) and shows their problems as
warnings, so the two never disagree.  status describes and exits 0; check is the gate (exit 10).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from typing import Callable, Optional

from azprov import attempts, provisioning_data
from azprov import state as state_file
from azprov import unit
from azprov.check import run_checks
from azprov.host import Host
from azprov.identity import read_dmi_vm_id, same_vm_id


def collect(host: Host, config_file: Optional[str] = None) -> dict:
    recorded = state_file.load(host)
    last = attempts.last(host)
    enabled = unit.is_enabled(host)
    dmi_id = read_dmi_vm_id(host)
    problems = run_checks(host, config_file)
    return {
        **_temp_disk(host, config_file),
        "provisioned": recorded is not None,
        "vm_id": recorded.vm_id if recorded else None,
        "this_vm": same_vm_id(recorded.vm_id, dmi_id) if recorded and dmi_id else None,
        "ready_at": recorded.ready_at if recorded else None,
        "incarnation": recorded.incarnation if recorded else None,
        "hostname": recorded.hostname if recorded else None,
        "admin_username": recorded.admin_username if recorded else None,
        "steps": list(recorded.steps) if recorded else [],
        "platform_warnings": list(recorded.platform_warnings) if recorded else [],
        "version": recorded.version if recorded else None,
        "last_attempt": _last_attempt(last),
        "custom_data": host.lexists(provisioning_data.CUSTOM_DATA),
        "user_data": host.lexists(provisioning_data.USER_DATA),
        "unit_enabled": enabled,
        "ready_for_capture": all(problem.warning for problem in problems),  # azprov check's verdict
        "warnings": [problem.problem for problem in problems],
        "capture_problems": [asdict(problem) for problem in problems if not problem.warning],
        "capture_warnings": [asdict(problem) for problem in problems if problem.warning],
    }


def _temp_disk(host: Host, config_file: Optional[str]) -> dict:
    """The temporary disk: who owns it and the last run of azprov-temp-disk.service."""
    from azprov import tempdisk
    from azprov.check import temp_disk_owner

    who, why = temp_disk_owner(host, config_file)
    return {"temp_disk": {"owner": who, "owner_why": why, "last_run": tempdisk.load_record(host)}}


def _last_attempt(last: Optional[attempts.Attempt]) -> Optional[dict]:
    if last is None:
        return None
    return {"outcome": last.outcome, "step": last.step, "reason": last.reason,
            "message": last.message, "at": last.at, "finished_at": last.finished_at,
            "vm_id": last.vm_id, "warnings": list(last.warnings)}


def running(host: Host) -> bool:
    """azprov is at work: its unit is starting or its process runs, or a run holds the lock."""
    return unit.is_running(host) or state_file.lock_held(host)


def wait(host: Host, *, poll: float = 0.5, sleep: Callable[[float], None] = time.sleep) -> None:
    while running(host):
        sleep(poll)


def exit_code(data: dict) -> int:
    """``--wait``: 0 when this VM (or, without a DMI id, the recorded VM) is provisioned, else 1."""
    return 0 if data["provisioned"] and data["this_vm"] is not False else 1


def _describe_attempt(attempt: dict) -> str:
    outcome = attempt["outcome"]
    text = f"{outcome} (started {attempt['at']}"
    text += f", ended {attempt['finished_at']})" if attempt.get("finished_at") else ")"
    if outcome in ("failed", "refused"):
        text += f" in step {attempt['step']}: {attempt['reason']}: {attempt['message']}"
    return text


def command(args, config, host: Host) -> int:
    """``azprov status [--root DIR] [--json] [--wait]``."""
    waiting = getattr(args, "wait", False)
    if waiting:
        wait(host)
    data = collect(host, getattr(args, "config", None))
    code = exit_code(data) if waiting else 0
    if getattr(args, "json", False):
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return code
    if data["provisioned"]:
        print(f"provisioned: yes, VM {data['vm_id']}"
              + (" (this VM)" if data["this_vm"] else " (another VM)" if data["this_vm"] is False else ""))
        print(f"ready at: {data['ready_at']} (incarnation {data['incarnation']})")
        if data["hostname"]:
            print(f"hostname: {data['hostname']}")
        if data["admin_username"]:
            print(f"admin user: {data['admin_username']}")
        found = [f"{what} ({path})" for what, path, present in (
            ("custom data", provisioning_data.CUSTOM_DATA, data["custom_data"]),
            ("user data", provisioning_data.USER_DATA, data["user_data"])) if present]
        print(f"custom data / user data: {', '.join(found) if found else 'none found'}")
        for warning in data["platform_warnings"]:
            print(f"warning: {warning}")
    else:
        print("provisioned: no (no state recorded)")
    if data["last_attempt"]:
        print(f"last attempt: {_describe_attempt(data['last_attempt'])}")
        for warning in data["last_attempt"]["warnings"]:
            print(f"warning: {warning}")
    print(f"{unit.UNIT}: {'enabled' if data['unit_enabled'] else 'disabled'}")
    disk = data["temp_disk"]
    print(f"temporary disk: owner {disk['owner']} ({disk['owner_why']})")
    if disk["last_run"]:
        run = disk["last_run"]
        label = "warning" if run.get("outcome") in ("left-alone", "skipped", "failed") else "temporary disk"
        print(f"{label}: {run.get('outcome')} at {run.get('at')}: {run.get('message')}")
    problems = data["capture_problems"]
    print("ready for capture: yes (as `azprov check` finds)" if not problems else
          f"ready for capture: no ({len(problems)} problem{'s' if len(problems) > 1 else ''}; "
          "`azprov check` is the gate)")
    for problem in data["capture_warnings"] + problems:
        print(f"warning: {problem['problem']}\n    fix: {problem['fix']}")
    return code
