"""Hand-run commands for debugging a VM: report-ready, report-failure, goalstate, metadata,
endpoint, config.  Each prints plain ``key: value`` lines, or JSON with ``--json``; each is
``handler(args, config, host)`` (the one Host of the run, at ``--root``)."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict
from typing import Mapping

from azprov import USER_AGENT

log = logging.getLogger(__name__)


def _emit(args, data: Mapping[str, object]) -> None:
    if getattr(args, "json", False):
        json.dump(data, sys.stdout, indent=2, sort_keys=False)
        sys.stdout.write("\n")
        return
    for key, value in data.items():
        if isinstance(value, (list, tuple)):
            print(f"{key}:")
            for item in value:
                print(f"  - {item}")
        else:
            print(f"{key}: {'' if value is None else value}")


def _fabric(config, host):
    from azprov.clients import connect

    return connect(config, host)


def _report(args, config, host, status, kvp_report: str) -> int:
    """The KVP record first (the host reads it with the health report), then the report."""
    from azprov import kvp

    kvp.report(host, kvp_report)
    fabric = _fabric(config, host)
    goal_state = fabric.wireserver.report(status)
    _emit(args, {"state": status.state, "substatus": status.substatus.value if status.substatus else None,
                 "accepted": True, "protocol": config.health.protocol,
                 **(asdict(goal_state) if goal_state else {})})
    return 0


def report_ready(args, config, host) -> int:
    from azprov.report import encode_success
    from azprov.health import HealthStatus
    from azprov.identity import read_dmi_vm_id

    success = encode_success(agent=USER_AGENT, vm_id=read_dmi_vm_id(host))
    return _report(args, config, host, HealthStatus.ready_status(), success)


def report_failure(args, config, host) -> int:
    from azprov.errors import ReportedByHand
    from azprov.health import HealthStatus
    from azprov.identity import read_dmi_vm_id
    from azprov.kvp import VALUE_LIMIT
    from azprov.report import encode_description, utf8_size

    error, vm_id = ReportedByHand(args.reason), read_dmi_vm_id(host)
    description = encode_description(error, agent=USER_AGENT, vm_id=vm_id)
    kvp_report = encode_description(error, agent=USER_AGENT, vm_id=vm_id, limit=VALUE_LIMIT, size=utf8_size)
    return _report(args, config, host, HealthStatus.failed(description), kvp_report)


def goalstate(args, config, host) -> int:
    goal_state = _fabric(config, host).wireserver.goal_state()
    _emit(args, asdict(goal_state))
    return 0


def metadata(args, config, host) -> int:
    data = _fabric(config, host).imds.metadata()
    profile = data.os_profile
    if args.json:
        keys = [{"key_data": key.key_data, "path": key.path} for key in data.public_keys]
    else:
        keys = [f"{_key_summary(key.key_data)} -> {key.path or '(default path)'}"
                for key in data.public_keys]
    _emit(args, {
        "vm_id": data.vm_id,
        "name": data.name,
        "computer_name": profile.computer_name if profile else None,
        "admin_username": profile.admin_username if profile else None,
        "disable_password_authentication": profile.disable_password_authentication if profile else None,
        "public_keys": keys,
        "pps_type": data.pps_type,
        "api_version": data.api_version,
        "has_custom_data": data.has_custom_data,
        "user_data_bytes": None if data.user_data is None else len(data.user_data),
        "provisioning_disc": _disc_summary(host),
    })
    return 0


def _disc_summary(host):
    """What the provisioning disc carries (password redacted), None without one, or the error;
    read in user space only (never mounted by a query)."""
    from azprov.errors import AzprovError
    from azprov.media.disc import read_ovf_env
    from azprov.ovf import parse_ovf_env

    try:
        found = read_ovf_env(host, mount=False)
        if found is None:
            return None
        return {"device": found.device, "read_by": found.method,
                **parse_ovf_env(found.data).summary()}
    except AzprovError as exc:
        return {"error": f"{exc.reason}: {exc}"}


def _key_summary(key_data: str) -> str:
    """``ssh-ed25519 AAAAC3...Xk7Q comment``: enough to recognise a key, short enough to read."""
    parts = key_data.split()
    if len(parts) >= 2 and len(parts[1]) > 24:
        parts[1] = f"{parts[1][:12]}...{parts[1][-8:]}"
    return " ".join(parts)[:120]


def endpoint(args, config, host) -> int:
    from azprov.endpoint import discover_wireserver

    explicit = config.wireserver.address
    found = discover_wireserver(str(explicit) if explicit else None, host)
    _emit(args, {"address": found.address, "source": found.source})
    return 0


def show_config(args, config, host) -> int:
    if args.json:
        _emit(args, config.to_dict())
    else:
        from azprov.config import render_toml

        sys.stdout.write(render_toml(config))
    return 0
