"""azprov's configuration: typed, strict, layered.

Layers, later wins key by key: built-in defaults, ``/etc/azprov/azprov.toml``, the drop-ins
``/etc/azprov/azprov.toml.d/*.toml`` in lexical order, then command-line overrides.  An unknown
section or key, or a value of the wrong type, is a :class:`~azprov.errors.ConfigError` naming the
file and the key: a typo must never silently fall back to a default.

This module holds the schema (one frozen dataclass per section), the loading of the files and
their rendering (``azprov config``).  Values are checked by :mod:`azprov.config_values`, driven by
the dataclasses below (their field types, plus an optional ``check`` in a field's metadata), so
adding a key means adding one field.  The files are parsed by :mod:`azprov.tomltext`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from azprov.address import Address, parse_address
from azprov.config_values import describe, validate_layer
from azprov.errors import ConfigError, StepFailed
from azprov.http import RetryPolicy
from azprov.tomltext import parse_toml, toml_value

if typing.TYPE_CHECKING:
    from azprov.host import Host

CONFIG_FILE = "etc/azprov/azprov.toml"
DROPIN_DIR = "etc/azprov/azprov.toml.d"
CONFIG_SIZE_LIMIT = 256 * 1024  # bytes per configuration file
OVERRIDES_SOURCE = "command line"

def _check_group_names(value: Tuple[str, ...]) -> Optional[str]:
    for name in value:
        if not name or any(char.isspace() or char in ":," for char in name):
            return f"invalid group name {json.dumps(name)} (empty, or has a space, ':' or ',')"
    return None


def _address_field(default: Optional[str], unset: str = "") -> Any:
    """An address setting: parsed when read (:func:`azprov.config_values.convert`), an
    :class:`~azprov.address.Address` from then on (``str()`` gives it back as written)."""
    return field(default=None if default is None else parse_address(default), metadata={"unset": unset})


@dataclass(frozen=True)
class WireServerConfig:
    """``[wireserver]``: where the WireServer is and how long to try it."""

    address: Optional[Address] = _address_field(
        None, unset="discover it: DHCP option 245, else 168.63.129.16"
    )
    deadline: float = 1200.0  # seconds for the whole WireServer phase
    # after provisioning and at every boot, only root may open TCP connections to the WireServer
    # (DNS on port 53 stays open; azprov-firewall.service, azprov.firewall)
    root_only: bool = True


@dataclass(frozen=True)
class ImdsConfig:
    """``[imds]``: where IMDS is and how long to try it."""

    address: Address = _address_field("169.254.169.254")
    deadline: float = 300.0  # seconds for the whole IMDS phase
    # seconds IMDS gets (from its first request) when the provisioning disc has a host name, a
    # user and a way to log in; then azprov goes on with the disc alone
    disc_grace: float = 15.0


@dataclass(frozen=True)
class HttpConfig:
    """``[http]``: timeouts and the retry backoff of every fabric request."""

    # the defaults are the HTTP policy's own (azprov.http.RetryPolicy): written once, there
    connect_timeout: float = RetryPolicy.connect_timeout
    read_timeout: float = RetryPolicy.read_timeout
    attempt_timeout: float = RetryPolicy.attempt_timeout  # one whole attempt, body included
    backoff_initial: float = RetryPolicy.backoff_initial
    backoff_max: float = RetryPolicy.backoff_max
    jitter: bool = RetryPolicy.jitter


def _check_protocol(value: str) -> Optional[str]:
    if value not in HEALTH_PROTOCOLS:
        return f"expected one of {', '.join(json.dumps(p) for p in HEALTH_PROTOCOLS)}, got {describe(value)}"
    return None


HEALTH_PROTOCOLS = ("xml", "json")


@dataclass(frozen=True)
class HealthConfig:
    """``[health]``: how Ready and failures are reported."""

    # "xml": goal state + POST /machine?comp=health; "json": POST /provisioning/health
    protocol: str = field(default="xml", metadata={"check": _check_protocol})


@dataclass(frozen=True)
class ProvisioningConfig:
    """``[provisioning]``: which provisioning steps run."""

    set_hostname: bool = True
    publish_hostname: bool = True
    create_user: bool = True
    admin_groups: Tuple[str, ...] = field(
        default=("sudo", "wheel"), metadata={"check": _check_group_names}
    )  # the first group that exists on the host is used
    install_ssh_keys: bool = True
    configure_sshd: bool = True
    generate_host_keys: bool = True
    keep_host_keys: bool = False  # a new VM keeps the image's SSH host keys (pinned on purpose)
    refuse_other_provisioners: bool = True
    lock_root_password: bool = True  # an image's root password is locked on every new VM


def _check_on_missing(value: str) -> Optional[str]:
    return None if value in ("fail", "warn") else f'expected "fail" or "warn", got {describe(value)}'


@dataclass(frozen=True)
class MediaConfig:
    """``[media]``: the provisioning disc (``ovf-env.xml``)."""

    read: bool = True  # look for the provisioning disc (ovf-env.xml)
    eject: bool = True  # eject it after reading, where the device allows it


@dataclass(frozen=True)
class DeprovisionConfig:
    """``[deprovision]``: what ``azprov deprovision`` does besides removing azprov's own traces."""

    lock_root_password: bool = True  # usermod -L root: no image root password for VMs to share


@dataclass(frozen=True)
class CustomDataConfig:
    """``[custom_data]``: what to do with custom data."""

    run: bool = False  # run custom data starting with #! once, after Ready, in its own unit
    # IMDS says the VM has custom data but no disc carried it: "fail" (ProvisioningFailed) or "warn"
    on_missing: str = field(default="fail", metadata={"check": _check_on_missing})


TEMP_DISK_FILESYSTEMS = ("ext4", "xfs")


def _check_filesystem(value: str) -> Optional[str]:
    if value not in TEMP_DISK_FILESYSTEMS:
        return f"expected one of {', '.join(json.dumps(f) for f in TEMP_DISK_FILESYSTEMS)}, got {describe(value)}"
    return None


def _check_mount_point(value: str) -> Optional[str]:
    import re

    if not re.fullmatch(r"(/[A-Za-z0-9._-]+)+", value) or "/." in value:
        return f"expected an absolute path of plain names (letters, digits, . _ -), got {describe(value)}"
    if value.rstrip("/") in ("/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/opt", "/proc",
                             "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var"):
        return f"{value} is a system directory: mounting the temporary disk there would hide it"
    return None


def _check_mount_options(value: str) -> Optional[str]:
    import re

    if not re.fullmatch(r"[A-Za-z0-9_.=-]+(,[A-Za-z0-9_.=-]+)*", value):
        return f"expected mount options like \"defaults,discard\", got {describe(value)}"
    return None


def _check_device(value: str) -> Optional[str]:
    return None if value.startswith("/dev/") and "/../" not in value + "/" else \
        f"expected a device path under /dev/, got {describe(value)}"


@dataclass(frozen=True)
class TempDiskConfig:
    """``[temp_disk]``: the VM's temporary (resource) disk, set up at every boot by
    azprov-temp-disk.service (see :mod:`azprov.tempdisk`)."""

    enabled: bool = True  # format (when fresh) and mount the temporary disk at every boot
    mount_point: str = field(default="/mnt", metadata={"check": _check_mount_point})
    filesystem: str = field(default="ext4", metadata={"check": _check_filesystem})
    mount_options: str = field(default="defaults", metadata={"check": _check_mount_options})
    swap_size_mb: int = 0  # a swap file of this size on the disk; 0: none
    # the disk to use instead of finding it (the SCSI resource disk, else the first NVMe temp disk)
    device: Optional[str] = field(default=None, metadata={"check": _check_device,
                                                          "unset": "find it (SCSI resource disk, else NVMe temp disk)"})
    wait: float = 30.0  # seconds to wait for the disk to appear at boot


@dataclass(frozen=True)
class Config:
    """The effective configuration: one field per section, and the files it came from."""

    wireserver: WireServerConfig = field(default_factory=WireServerConfig)
    imds: ImdsConfig = field(default_factory=ImdsConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    provisioning: ProvisioningConfig = field(default_factory=ProvisioningConfig)
    media: MediaConfig = field(default_factory=MediaConfig)
    custom_data: CustomDataConfig = field(default_factory=CustomDataConfig)
    temp_disk: TempDiskConfig = field(default_factory=TempDiskConfig)
    deprovision: DeprovisionConfig = field(default_factory=DeprovisionConfig)
    sources: Tuple[str, ...] = ()  # files that were read, in order

    def to_dict(self) -> Dict[str, Dict[str, Any]]:
        """``{section: {key: value}}`` of every setting (``sources`` left out; addresses as written)."""
        return {name: {f.name: _plain(getattr(getattr(self, name), f.name))
                       for f in dataclasses.fields(_SECTIONS[name])}
                for name in _SECTIONS}


def _plain(value: object) -> object:
    """A setting as TOML and JSON write it: an address as written."""
    return str(value) if isinstance(value, Address) else value


# section name -> section dataclass, in declaration order (each section's default factory is its
# class: cheaper at import than resolving the annotations with typing.get_type_hints, issue 23)
_SECTIONS: Dict[str, type] = {
    f.name: f.default_factory for f in dataclasses.fields(Config)
    if f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory)
}


# --------------------------------------------------------------------------------------------
# files


def _read_toml(host: Optional["Host"], path: str, shown: str) -> Dict[str, object]:
    """The TOML file at ``path`` in ``host``'s root, or without a host the file ``path`` of this
    machine (``--config FILE``); ``shown`` in messages."""
    from azprov.host import UnsafePath, read_bounded

    try:
        data = (host.read(path, follow=True, limit=CONFIG_SIZE_LIMIT) if host is not None
                else read_bounded(os.path.realpath(path), CONFIG_SIZE_LIMIT, where=shown))
    except OSError as exc:
        raise ConfigError(
            f"{shown}: cannot read the configuration file: {exc.strerror or exc}", source=shown
        ) from None
    except UnsafePath:
        raise ConfigError(f"{shown}: not a regular file", source=shown) from None
    except StepFailed:  # larger than the limit
        raise ConfigError(
            f"{shown}: configuration file is larger than {CONFIG_SIZE_LIMIT // 1024} KiB", source=shown,
        ) from None
    if data is None:
        raise ConfigError(f"{shown}: cannot read the configuration file: No such file or directory",
                          source=shown)
    try:
        return parse_toml(data)
    except ValueError as exc:
        raise ConfigError(f"{shown}: {exc}", source=shown) from None


def _dropins(host: "Host") -> List[str]:
    """The in-root paths of the drop-ins, in lexical order."""
    directory = host.real_path("/" + DROPIN_DIR)
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise ConfigError(
            f"{directory}: cannot list the drop-in directory: {exc.strerror or exc}",
            source=directory,
        ) from None
    return [f"/{DROPIN_DIR}/{name}" for name in sorted(names) if name.endswith(".toml")]


def load_config(
    host: "Host",
    *,
    config_file: Optional[str] = None,
    overrides: Optional[Mapping[str, Mapping[str, object]]] = None,
) -> Config:
    """The effective configuration.

    Files are read through ``host``: symlinks resolve inside its root, so an image tree's absolute
    link never makes azprov read the build host's file.
    ``config_file`` (``--config FILE``, a path as the user gave it, not under ``root``) replaces
    ``<root>/etc/azprov/azprov.toml`` and must exist; the default file may be absent.  Drop-ins are
    read from ``<root>/etc/azprov/azprov.toml.d/`` either way.  ``overrides`` maps section -> key ->
    value from the command line; ``None`` values mean "not given" and are skipped.
    """
    from azprov.host import Host

    layers: List[Tuple[str, Mapping[str, object]]] = []
    sources: List[str] = []
    if config_file is not None:  # the user's own file, on this machine
        main = os.path.abspath(config_file)
        layers.append((config_file, _read_toml(None, main, config_file)))
        sources.append(config_file)
    elif host.lexists("/" + CONFIG_FILE):
        main = host.path("/" + CONFIG_FILE)
        layers.append((main, _read_toml(host, "/" + CONFIG_FILE, main)))
        sources.append(main)
    for path in _dropins(host):
        shown = host.path(path)
        layers.append((shown, _read_toml(host, path, shown)))
        sources.append(shown)
    if overrides:
        given = {
            section: (
                {key: value for key, value in values.items() if value is not None}
                if isinstance(values, Mapping)
                else values
            )
            for section, values in overrides.items()
        }
        layers.append((OVERRIDES_SOURCE, given))

    merged: Dict[str, Dict[str, object]] = {name: {} for name in _SECTIONS}
    for source, data in layers:
        for section, values in validate_layer(source, data, _SECTIONS).items():
            merged[section].update(values)

    config = Config(
        **{name: cls(**merged[name]) for name, cls in _SECTIONS.items()},
        sources=tuple(sources),
    )
    if config.http.backoff_initial > config.http.backoff_max:
        raise ConfigError(
            f"[http] backoff_initial ({config.http.backoff_initial:g}) is larger than "
            f"backoff_max ({config.http.backoff_max:g}); read from: "
            f"{', '.join(sources) or 'built-in defaults'}"
            + (f", {OVERRIDES_SOURCE}" if overrides else ""),
            key="http.backoff_initial",
        )
    return config


# --------------------------------------------------------------------------------------------
# rendering


def render_toml(config: Config) -> str:
    """The effective configuration as TOML; loading it back gives the same settings."""
    lines = ["# Effective azprov configuration."]
    if config.sources:
        lines.append("# Read from, in order (later wins):")
        # quoted and escaped: a file name with a newline must not end the comment
        lines.extend(f"#   {json.dumps(source)}" for source in config.sources)
    else:
        lines.append("# No configuration file was read: built-in defaults.")
    for section, values in config.to_dict().items():
        lines.append("")
        lines.append(f"[{section}]")
        unset = {f.name: f.metadata.get("unset") for f in dataclasses.fields(_SECTIONS[section])}
        for key, value in values.items():
            if value is None:
                lines.append(f"# {key} is not set: {unset.get(key) or 'built-in behaviour'}")
            else:
                lines.append(f"{key} = {toml_value(value)}")
    return "\n".join(lines) + "\n"
