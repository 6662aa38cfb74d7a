"""What the platform asked for that azprov does not do: a guest agent and VM extensions.

Two things say it, both read as WALinuxAgent reads them:

- the provisioning disc's ``PlatformSettings/ProvisionGuestAgent`` (``true`` when the VM was
  created asking for a guest agent: ``az vm create``'s default, ``provisionVMAgent``);
- the goal state's ``Configuration/ExtensionsConfig`` document, whose ``Plugins/Plugin``
  elements (attributes ``name``, ``version``, ``state``) are the VM extensions the platform
  wants run (Azure Policy, Backup, Update Manager, Custom Script...).

With neither a guest agent running here (WALinuxAgent kept for extensions, see
:mod:`azprov.waagent`), extensions time out after about 90 minutes and nothing on the VM says
why.  azprov says it once, after Ready: in the journal and on the serial console (a warning),
in the KVP report (a ``warning`` field of the success record) and in ``azprov status``.  It is
advice only: the ExtensionsConfig is fetched with a short deadline of its own, after Ready, and
every failure to read it is a warning, never a failure of the VM.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

from azprov import waagent
from azprov.errors import AzprovError, ProtocolError
from azprov.host import Host
from azprov.http import Deadline
from azprov.xmlparse import parse_untrusted_xml

log = logging.getLogger(__name__)

MAX_BYTES = 1024 * 1024  # the document carries every extension's settings
MAX_PLUGINS = 256
MAX_NAME = 256
DEADLINE = 10.0  # seconds for the whole fetch, after Ready
FIX = ("keep WALinuxAgent for VM extensions (Provisioning.Agent=disabled in /etc/waagent.conf), or "
       "create VMs without the agent (az vm create --enable-agent false; provisionVMAgent: false) "
       "and without extensions")


@dataclass(frozen=True)
class Plugin:
    name: str
    version: str
    state: str  # "enabled", "disabled", "uninstall"


def _clean(value: Optional[str]) -> str:
    text = (value or "").strip()
    return text if len(text) <= MAX_NAME and text.isprintable() else ""


def parse_extensions_config(body: bytes) -> Tuple[Plugin, ...]:
    """The ``Plugins/Plugin`` list of an ExtensionsConfig document."""
    root = parse_untrusted_xml(body, "extensions configuration", MAX_BYTES, "Extensions")
    plugins = []
    for element in root.findall("Plugins/Plugin"):
        if len(plugins) >= MAX_PLUGINS:
            raise ProtocolError(f"the extensions configuration lists more than {MAX_PLUGINS} extensions")
        name = _clean(element.get("name"))
        if name:
            plugins.append(Plugin(name, _clean(element.get("version")), _clean(element.get("state")) or "enabled"))
    return tuple(plugins)


def requested(wireserver, goal_state) -> Optional[Tuple[Plugin, ...]]:
    """The extensions the goal state asks to run (state other than uninstall); None when they
    could not be read (logged as a warning)."""
    if goal_state is None or not goal_state.extensions_config:
        return ()
    try:
        body = wireserver.document(goal_state.extensions_config, "extensions configuration",
                                   MAX_BYTES, Deadline.after(DEADLINE))
        return tuple(p for p in parse_extensions_config(body) if p.state.lower() != "uninstall")
    except AzprovError as exc:
        log.warning("could not read the goal state's extensions configuration: %s", exc)
        return None


@dataclass(frozen=True)
class Advice:
    message: str  # the warning, naming the extensions and what to do
    extensions: Tuple[str, ...]
    guest_agent_requested: Optional[bool]


def advise(host: Host, guest_agent_requested: Optional[bool],
           plugins: Optional[Tuple[Plugin, ...]]) -> Optional[Advice]:
    """A warning when the platform asked for a guest agent or extensions and none runs here."""
    names = tuple(f"{p.name} {p.version}".strip() for p in plugins or ())
    if not names and guest_agent_requested is not True:
        return None
    verdict = waagent.judge(host)
    if verdict.extensions_only:
        log.info("the platform asks for %s; WALinuxAgent (kept for extensions) handles them",
                 ", ".join(names) or "a guest agent")
        return None
    asked: List[str] = []
    if names:
        asked.append(f"VM extension{'s' if len(names) > 1 else ''} {', '.join(names)}")
    if guest_agent_requested:
        asked.append("a guest agent (ProvisionGuestAgent=true on the provisioning disc)")
    consequence = ("they will fail after about 90 minutes" if names else
                   "extensions added to it later will fail, and the portal shows the agent as not ready")
    message = (f"this VM was created asking for {' and '.join(asked)}, but no guest agent runs "
               f"here: {consequence}. To fix: {FIX}")
    return Advice(message, names, guest_agent_requested)


def after_ready(host: Host, wireserver, goal_state, disc,
                tell_host: Callable[[str], None]) -> Tuple[str, ...]:
    """The provisioning flow's call once Ready was accepted: warn (log, console, KVP through
    ``tell_host``) and return the warnings for the state.  Never raises: it is advice."""
    try:
        if waagent.judge(host).extensions_only:
            return ()
        requested_agent = disc.provision_guest_agent if disc is not None else None
        advice = advise(host, requested_agent, requested(wireserver, goal_state))
        if advice is None:
            return ()
        log.warning("%s", advice.message)
        tell_host(advice.message)
        return (advice.message,)
    except Exception as exc:  # noqa: BLE001 - advice must never fail a provisioned VM
        log.warning("could not check what the platform asked for: %s: %s", type(exc).__name__, exc)
        return ()
