"""The first-boot flow: :meth:`Provisioning.provision` reads as README's "What azprov does", and
:data:`PHASES` is its one list of phase names, in order (the ``AZPROV_STEP`` of the journal, the
``step`` of a failure report; ``tests/test_provision.py`` holds azprov(8) and
docs/architecture.md to it).

- A VM whose id is recorded in the state is already provisioned: exit 0 without a word to the
  WireServer (the id comes from DMI, or from IMDS where there is no DMI: the ``identity`` phase).
- Everything IMDS asks for is validated, the refusals checked and every path azprov will write
  (the state and unit after Ready included) checked for traps before the first change, so a
  hostile value or image leaves the system as it was.
- Any failure once the WireServer has answered is reported as NotReady/ProvisioningFailed with an
  encoded Description naming the reason and the step; the exit code is the error's.  So is a goal
  state azprov refuses whose incarnation and ids can still be echoed (``invalid_goal_state``).
  When the WireServer itself does not answer, or its goal state cannot be echoed, there is nobody
  to tell: the log says so.
- The KVP ``PROVISIONING_REPORT`` (``azprov.kvp``) is written before every health report, and on
  every failure, also when the WireServer cannot be reached.
- Every attempt is recorded with its outcome (``azprov.attempts``) for ``azprov status``.
- SSH host keys are made in the background from the start and waited for on every path; on
  success READY=1 waits for the ones sshd can start on, the RSA key for the state to be saved.
- The state is written only after Ready was accepted, so a lost report is retried next boot.
- The provisioning disc is read after the goal state, so a disc that cannot be read is reported;
  IMDS (fetched beside the goal state) and the disc are combined as :mod:`azprov.sources` says.
- The VM id is settled once, when the metadata is known (:func:`azprov.identity.settle`); until
  then failures carry DMI's.
- One run at a time: ``/run/azprov/lock``.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional

from azprov import USER_AGENT, admins, attempts, extensions, firewall, kvp
from azprov import log as azlog
from azprov import provisioning_data, sources
from azprov import state as state_file
from azprov import unit
from azprov.background import Background
from azprov.errors import AzprovError, FabricUnreachable, InternalError
from azprov.guards import (check_custom_data, check_login, check_metadata, check_other_provisioners,
                           password_not_set, waagent_extensions_only)
from azprov.health import HealthStatus
from azprov.host import Host
from azprov.identity import VmId, read_dmi_vm_id, same_vm_id, settle
from azprov.notify import Notifier
from azprov.report import encode_description, encode_success, utf8_size
from azprov.steps import STEPS, host_keys

log = logging.getLogger(__name__)

# The phases of a first boot, in the order they run (``identity`` only where there is no DMI).
PHASES = ("identity", "goal_state", "media", "metadata", "checks", *(step.NAME for step in STEPS),
          "provisioning_data", host_keys.NAME, "admins", "report", "state", "unit")

# Failing in these phases means the WireServer did not take our word: no point reporting to it.
# (A failure fetching the goal state is covered by ``wireserver_answered``, still False then.)
_NO_REPORT_STEPS = ("report",)


@dataclass
class Outcome:
    """What a provisioning run did (``azprov provision --json`` prints it)."""

    status: str  # "provisioned" or "already_provisioned"
    vm_id: str
    state: Optional[state_file.State] = None
    changes: Dict[str, bool] = field(default_factory=dict)

    def to_dict(self) -> dict:
        data = {"status": self.status, "vm_id": self.vm_id, "changes": self.changes}
        if self.state is not None:
            data.update(incarnation=self.state.incarnation, ready_at=self.state.ready_at,
                        hostname=self.state.hostname, admin_username=self.state.admin_username)
        return data


class Provisioning:
    """One run of the flow: :meth:`provision` is the whole story, the other methods its phrases."""

    def __init__(self, host: Host, config, connect: Callable, notifier: Notifier) -> None:
        self.host = host
        self.config = config
        self.settings = config.provisioning
        self.connect = connect
        self.notifier = notifier
        self.fabric = None
        self.step = "identity"
        self.dmi_id: Optional[str] = None
        self.vm: Optional[VmId] = None  # settled in the metadata phase
        self.wireserver_answered = False
        self.ready_accepted = False
        self.keys: Optional[Background] = None  # ssh-keygen in the background
        self.keys_started = False
        self.keys_usable = threading.Event()
        self.keys_early = False  # sshd released before the RSA key: it is waited for after Ready
        self.history = attempts.Recorder(host)

    @property
    def vm_id(self) -> Optional[str]:
        """The settled VM id, DMI's until then (for failure reports)."""
        return self.vm.value if self.vm is not None else self.dmi_id

    def run(self) -> Outcome:
        try:
            return self.identify_and_provision()
        except BaseException:
            self.settle_host_keys()
            raise

    def start_host_keys(self, dmi_id: Optional[str], known_vm: bool) -> None:
        """Host keys first, in the background: they need nothing from the fabric, and sshd needs
        them whatever happens next (break-glass logins after a failure).  A VM the state does
        not know gets new ones (see azprov.steps.host_keys).  Once per run."""
        if self.keys_started:
            return
        self.keys_started = True
        plan = host_keys.plan(self.host, self.settings, vm_id=dmi_id, known_vm=known_vm)
        if plan is not None:
            self.keys = Background(lambda: self.make_host_keys(plan), step=host_keys.NAME)

    def make_host_keys(self, plan) -> bool:
        """In the background: ``keys_usable`` is set once sshd can start (``keys_early``: while
        the RSA key is still being made), or when the run ends."""
        def early() -> None:
            self.keys_early = True
            self.keys_usable.set()
        try:
            return host_keys.apply(self.host, None, self.settings, plan, early=early)
        finally:
            self.keys_usable.set()

    def identify_and_provision(self) -> Outcome:
        self.dmi_id = read_dmi_vm_id(self.host)
        recorded = state_file.load(self.host)
        # without DMI, a recorded state counts as this VM's (only IMDS could tell otherwise)
        self.start_host_keys(self.dmi_id, recorded is not None and (
            self.dmi_id is None or same_vm_id(recorded.vm_id, self.dmi_id)))
        if recorded is not None and same_vm_id(recorded.vm_id, self.dmi_id):
            return self.already_provisioned(recorded)
        self.history.begin(self.dmi_id)
        try:
            self.fabric = self.connect()
            identify = recorded is not None and self.dmi_id is None  # only IMDS can say
            imds = self.ask_imds(identify=identify)
            if identify and same_vm_id(recorded.vm_id, imds.result().vm_id):
                self.history.discard()
                return self.already_provisioned(recorded)
            outcome = self.provision(imds)
        except AzprovError as error:
            self.report_failure(error)
            raise
        except Exception as error:
            self.report_failure(InternalError(f"{type(error).__name__}: {error}"))
            raise
        self.history.succeeded(self.vm_id)
        return outcome

    def provision(self, imds: Background) -> Outcome:
        """README's "What azprov does", step by step (the phases of :data:`PHASES`)."""
        with self.phase("goal_state"):  # 1. the goal state (IMDS is asked meanwhile)
            served = self.fabric.wireserver.goal_state()
            self.wireserver_answered = True
        with self.phase("media"):  # 2. the provisioning disc
            disc, ovf_redacted = self.read_disc()
        with self.phase("metadata"):  # 3. IMDS with the disc; the VM id settled
            metadata = sources.choose(imds, disc, self.dmi_id, self.config.imds.disc_grace)
            self.vm = settle(self.dmi_id, metadata.vm_id)
            azlog.set_context(vm_id=self.vm.value)
        self.check(metadata)  # nothing changes before every check has passed
        self.warn(password_not_set(metadata, self.settings, disc, self.config.media.read))
        changes = self.apply_steps(metadata)  # 4. hostname, user, password, keys, sshd...
        with self.phase("provisioning_data"):
            provisioning_data.save(self.host, metadata, ovf_redacted)
        changes.update(self.host_keys_done())
        if self.settings.create_user:  # kept by a plain deprovision: see azprov.admins
            with self.phase("admins"):
                admins.remember(self.host, metadata.os_profile.admin_username)
                admins.grant_sudo(self.host)  # azprov's sudoers drop-in: the record's users only
        goal_state = self.report_ready(served)  # 5. READY=1, the KVP report, Ready
        warnings = extensions.after_ready(  # a guest agent or extensions asked for: advice only
            self.host, self.fabric.wireserver, goal_state, disc,
            lambda text: self.tell_host(encode_success(agent=USER_AGENT, vm_id=self.vm.value, warning=text)))
        recorded = self.record(metadata, goal_state, changes, warnings)  # 6. the state, the unit off
        self.notifier.status(f"provisioned VM {self.vm.value}")
        provisioning_data.run_custom_data(self.host, metadata.custom_data, self.config.custom_data.run)
        return Outcome("provisioned", self.vm.value, recorded, changes)

    def ask_imds(self, *, identify: bool) -> Background:
        """IMDS's metadata under way: fetched now (the ``identity`` phase) when only IMDS can say
        whether this VM is the recorded one, else in the background while the goal state is
        fetched (two servers, read-only requests; its error is raised in the metadata phase).
        The CPU work (imports, session) is done first, in this thread: see Fabric.prepare."""
        if identify:
            with self.phase("identity"):
                return Background.finished(self.fabric.imds.metadata())
        self.fabric.prepare()
        deadline = self.fabric.imds.deadline()
        return Background(lambda: self.fabric.imds.metadata(deadline), step="metadata", give_up=deadline.end)

    def check(self, metadata) -> None:
        """Every check before the first change: the metadata, the refusals, each step's own,
        and that what is written after Ready (the state, the unit) can be."""
        with self.phase("checks"):
            check_metadata(metadata)
            check_login(metadata, self.settings)
            check_custom_data(metadata, self.config.custom_data.on_missing)
            check_other_provisioners(self.host, self.settings)
            for step in self.enabled_steps():
                self.step = step.NAME
                azlog.set_context(step=step.NAME)
                step.check(self.host, metadata, self.settings)
            self.step = "state"  # what is written after Ready must be writable before it
            state_file.check(self.host)
            unit.check(self.host)
            if self.settings.create_user:
                self.step = "admins"
                admins.check(self.host, metadata.os_profile.admin_username)

    def warn(self, message: Optional[str]) -> None:
        """A warning a person must act on: the log (stderr, journal, console) and the attempt's
        record (``azprov status``)."""
        if message:
            log.warning("%s", message)
            self.history.warn(message)

    def host_keys_done(self) -> Dict[str, bool]:
        """The background ssh-keygen's outcome, as a step's change: waited for until sshd can
        start on the keys (a failure before that is this run's)."""
        if self.keys is not None:
            with self.phase(host_keys.NAME, report=lambda: "changed" if changed else "unchanged"):
                self.keys_usable.wait()  # sshd can start: the RSA key may still be on its way
                changed = True if self.keys_early else self.keys.result()
            return {host_keys.NAME: changed}
        return {host_keys.NAME: False} if host_keys.enabled(self.settings) else {}

    def report_ready(self, served):
        """READY=1 (sshd and logins start), the KVP report, then Ready; the goal state Ready was
        accepted for.  A WALinuxAgent kept for extensions is ordered after this unit and posts
        its own Ready at once, so with it READY=1 waits for ours."""
        hold_ready = waagent_extensions_only(self.host)
        if not hold_ready:
            self.notifier.ready("provisioned; reporting Ready to Azure")
        self.tell_host(encode_success(agent=USER_AGENT, vm_id=self.vm.value))
        with self.phase("report"):
            goal_state = self.fabric.wireserver.report(HealthStatus.ready_status()) or served
            self.ready_accepted = True
        if hold_ready:
            self.notifier.ready("provisioned; Ready accepted, WALinuxAgent may start")
        return goal_state

    def record(self, metadata, goal_state, changes: Dict[str, bool], warnings) -> state_file.State:
        """After Ready: the state that makes later boots skip this VM, and the unit disabled."""
        recorded = state_file.State(
            vm_id=self.vm.value, incarnation=goal_state.incarnation,
            container_id=goal_state.container_id, instance_id=goal_state.instance_id,
            ready_at=state_file.now(), steps=tuple(changes),
            hostname=metadata.os_profile.computer_name.lower() if self.settings.set_hostname else None,
            admin_username=metadata.os_profile.admin_username, vm_id_source=self.vm.source,
            platform_warnings=warnings,
        )
        with self.phase("state"):
            state_file.save(self.host, recorded)
        if self.keys_early:  # the RSA key, made while sshd started on the others
            self.settle_host_keys()
        with self.phase("unit"):
            unit.disable(self.host)
        firewall.after_provisioning(self.host, self.config)  # a warning at worst, never a failure
        log.info("VM %s provisioned; Ready accepted for incarnation %d", self.vm.value,
                 goal_state.incarnation, extra=azlog.outcome("ok", azlog.MESSAGE_READY))
        return recorded

    def settle_host_keys(self) -> None:
        """On a failure path: wait for ssh-keygen so sshd finds its keys; its own failure is
        logged, the failure being handled stays the one reported."""
        self.start_host_keys(None, known_vm=True)  # failed before they started: missing ones only
        if self.keys is None:
            return
        try:
            self.keys.result()
        except Exception as exc:
            log.error("could not generate the SSH host keys: %s", exc, extra={"AZPROV_STEP": host_keys.NAME})

    def tell_host(self, report: str) -> None:
        """The Hyper-V KVP PROVISIONING_REPORT: written before every health report."""
        kvp.report(self.host, report)

    def read_disc(self):
        """The provisioning disc's OvfEnv and redacted document, or (None, None) without a disc."""
        if not self.config.media.read:
            log.info("not looking for a provisioning disc (media.read = false)")
            return None, None
        from azprov.media import disc as media
        from azprov.ovf import parse_ovf_env, redacted

        found = media.read_ovf_env(self.host)
        if found is None:
            log.info("no provisioning disc: no password or custom data for this VM")
            return None, None
        env = parse_ovf_env(found.data)
        log.info("provisioning disc: %s", json.dumps(env.summary(), sort_keys=True))
        if self.config.media.eject:
            media.eject(self.host, found.device)
        return env, redacted(found.data)

    def enabled_steps(self) -> List:
        enabled = []
        for step in STEPS:
            if step.enabled(self.settings):
                enabled.append(step)
            else:
                log.info("step %s: skipped (turned off in the configuration)", step.NAME)
        return enabled

    def apply_steps(self, metadata) -> Dict[str, bool]:
        changes = {}
        for step in self.enabled_steps():
            with self.phase(step.NAME, report=lambda: "changed" if changes[step.NAME] else "unchanged"):
                changes[step.NAME] = step.apply(self.host, metadata, self.settings)
        return changes

    @contextmanager
    def phase(self, name: str, report: Optional[Callable[[], str]] = None) -> Iterator[None]:
        self.step = name
        azlog.set_context(step=name)
        self.notifier.status(f"{name.replace('_', ' ')}...")
        log.info("step %s: started", name)
        yield
        suffix = f" ({report()})" if report else ""
        log.info("step %s: done%s", name, suffix, extra=azlog.outcome("ok"))

    def already_provisioned(self, recorded: state_file.State) -> Outcome:
        azlog.set_context(step="identity", vm_id=recorded.vm_id)
        self.settle_host_keys()
        log.info("VM %s is already provisioned (Ready accepted at %s): nothing to do",
                 recorded.vm_id, recorded.ready_at, extra=azlog.outcome("already_provisioned"))
        try:
            unit.disable(self.host)  # a run killed between state and unit left it enabled
        except AzprovError as exc:
            log.warning("could not disable %s: %s", unit.UNIT, exc)
        self.notifier.ready(f"VM {recorded.vm_id} already provisioned")
        return Outcome("already_provisioned", recorded.vm_id, recorded)

    def report_failure(self, error: AzprovError) -> None:
        log.error("provisioning failed in step %s: %s", self.step, error,
                  extra=azlog.outcome("failed", azlog.MESSAGE_FAILED))
        error.logged = True  # the CLI does not repeat it in the journal
        self.notifier.status(f"failed in step {self.step}: {error}"[:200])
        self.history.failed(error, self.step, self.vm_id)
        if self.ready_accepted:
            log.error("Ready was already accepted; the failure is not reported to Azure")
            return
        # KVP first, whatever the WireServer does: the host reads it even when the WireServer
        # cannot be reached, and with the health report when it can.
        self.tell_host(encode_description(error, agent=USER_AGENT, step=self.step, vm_id=self.vm_id,
                                          limit=kvp.VALUE_LIMIT, size=utf8_size))
        echo = getattr(error, "echo", None)  # a refused goal state that can still be answered
        if echo is None and (not self.wireserver_answered or self.step in _NO_REPORT_STEPS):
            if isinstance(error, FabricUnreachable):
                log.error("the WireServer did not answer: nobody to tell about the failure")
            else:
                log.error("the WireServer refused or garbled the %s: not reporting the failure to it",
                          self.step.replace("_", " "))
            return
        description = encode_description(error, agent=USER_AGENT, step=self.step, vm_id=self.vm_id)
        try:
            if echo is not None:
                self.fabric.wireserver.report(HealthStatus.failed(description), goal_state=echo)
            else:
                self.fabric.wireserver.report(HealthStatus.failed(description))
        except AzprovError as exc:
            log.error("could not report the failure to Azure: %s", exc)
            return
        log.info("reported ProvisioningFailed to Azure: %s", description)


def provision(host: Host, config, *, connect: Callable, notifier: Optional[Notifier] = None,
              lock_wait: float = state_file.LOCK_WAIT) -> Outcome:
    """Run the flow under the lock; returns what happened or raises the AzprovError that stopped it."""
    notifier = notifier or Notifier()
    azlog.set_context(step="lock")
    with state_file.acquire(host, lock_wait):
        return Provisioning(host, config, connect, notifier).run()


def command(args, config, host: Host) -> int:
    """``azprov provision [--root DIR] [--json]``."""
    from azprov.clients import connect

    outcome = provision(host, config, connect=lambda: connect(config, host))
    if getattr(args, "json", False):
        json.dump(outcome.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif azlog.destination() == "journal":
        pass  # the journal (and the console) already have it, with its fields
    elif outcome.status == "already_provisioned":
        print(f"VM {outcome.vm_id} is already provisioned (Ready at {outcome.state.ready_at}); "
              "nothing to do")
    else:
        changed = [name for name, did in outcome.changes.items() if did]
        print(f"VM {outcome.vm_id} provisioned: Ready accepted (incarnation "
              f"{outcome.state.incarnation}); changed: {', '.join(changed) or 'nothing'}")
    return 0
