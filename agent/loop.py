"""The agent's loop: sync (report, receive the desired state), reconcile, wait with jitter; and its
failure modes: backoff while the API is away, standby while another agent holds the lease, fencing
when no sync has succeeded for fence_seconds, a clean shutdown.

`run_once` is one step, so the loop can be driven step by step against a real server in tests.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from agent.client import LeaseHeld, Unauthorized, Unavailable
from agent.drivers.base import Driver, DriverUnavailable, Result, Run, RunSpec
from agent.protocol import AgentInfo, Report, RunItem, RunKey, SyncResponse, sync_request
from agent.reconcile import LOST_MESSAGE, Observed, reconcile

log = logging.getLogger("agent")

FIRST_SYNC_SECONDS = 2.0  # until the server says how often
BACKOFF_CAP_SECONDS = 30.0
STANDBY_SECONDS = 5.0  # how often a standby asks whether the lease has lapsed, unless told (Retry-After)
FINAL_SYNC_TIMEOUT_SECONDS = 5.0
SHUTDOWN_SLACK_SECONDS = 10.0  # past the longest grace, a run that SIGKILL did not end is left to close()
ABSENT_MESSAGE = "not running on this agent"


class Agent:
    """One agent: a client to the server, a driver, and what it remembers between syncs."""

    def __init__(
        self,
        *,
        client,
        driver: Driver,
        info: AgentInfo,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[float, float], float] = random.uniform,
    ):
        self.client = client
        self.driver = driver
        self.info = info
        self.clock = clock
        self.jitter = jitter
        self.sync_seconds = FIRST_SYNC_SECONDS
        self.fence_seconds: float | None = None
        self.last_success: float | None = None
        self.failures = 0
        self.fenced = False
        self.standby_since: float | None = None
        # Reports for runs the agent does not have (lost, absent), sent until the server stops listing them.
        self.reports_without_run: dict[RunKey, Report] = {}
        self.final_reported: set[RunKey] = set()
        self._logged_endings: set[RunKey] = set()

    def recover(self) -> None:
        """At startup: adopt what the driver can, clean up the rest."""
        adopted = self.driver.recover()
        for run in adopted:
            log.info("adopted %s generation %s", run.deployment_id, run.generation)

    def reports(self) -> list[Report]:
        """The state of every run this agent knows, for the next sync."""
        reports = []
        for run in self.driver.runs():
            result = self.driver.result(run)
            if result is None:
                reports.append(
                    Report(run.deployment_id, run.generation, "running", _iso(run.started_at), container=run.container)
                )
                continue
            if run.key not in self._logged_endings:
                self._logged_endings.add(run.key)
                _log_ending(run, result)
            reports.append(
                Report(
                    run.deployment_id,
                    run.generation,
                    result.state,
                    _iso(result.finished_at),
                    exit_code=result.exit_code,
                    message=result.message,
                    logs=result.logs,
                    container=run.container,
                )
            )
        return reports + list(self.reports_without_run.values())

    def run_once(self) -> float:
        """One sync and what follows from it; returns how long to wait before the next.

        Raises Unauthorized (401): the caller exits.
        """
        self._fence_if_due()
        reports = self.reports()
        try:
            desired = self.client.sync(sync_request(self.info, reports))
        except Unauthorized:
            raise
        except LeaseHeld as held:
            return self._standby(held)
        except Unavailable as error:
            return self._unreachable(error)
        self._synced(desired, reports)
        if self._claim(desired.cluster_id):
            self._reconcile(desired)
        return self.jitter(0.8 * self.sync_seconds, 1.2 * self.sync_seconds)

    def run_forever(self, stopping: threading.Event) -> None:
        """Sync until `stopping` is set; raises Unauthorized."""
        while not stopping.is_set():
            delay = self.run_once()
            stopping.wait(self._until_fence(delay))

    def shutdown(self, hurry: threading.Event | None = None, report: bool = True) -> None:
        """Stop the runs that end with their agent (with their grace; at once if `hurry` gets set),
        send their last reports if `report` and the server answers, and release the driver."""
        if self.driver.runs_end_with_agent:
            running = [run for run in self.driver.runs() if self.driver.result(run) is None]
            for run in running:
                self._stop(run, run.grace_seconds, "the agent is shutting down")
            hurried = False
            give_up = time.monotonic() + max((run.grace_seconds for run in running), default=0) + SHUTDOWN_SLACK_SECONDS
            while any(self.driver.result(run) is None for run in running) and time.monotonic() < give_up:
                if hurry is not None and hurry.is_set() and not hurried:
                    hurried = True
                    log.warning("stopping now: killing %d run(s) without waiting for their grace", len(running))
                    for run in running:
                        self.driver.stop(run, 0)
                time.sleep(0.1)
        reports = self.reports()  # also logs how each run ended
        if reports and report and self.driver.runs_end_with_agent:
            try:
                self.client.sync(sync_request(self.info, reports), timeout=FINAL_SYNC_TIMEOUT_SECONDS)
            except (Unauthorized, LeaseHeld, Unavailable) as error:
                log.warning("could not send the last reports: %s", error)
        self.driver.close()

    def _synced(self, desired: SyncResponse, reports: list[Report]) -> None:
        if self.failures or self.standby_since is not None:
            log.info("synced with the server again (cluster %s)", desired.cluster_id)
        elif self.last_success is None:
            log.info("synced: holding cluster %s, syncing every %g s", desired.cluster_id, desired.sync_seconds)
        if self.fenced:
            log.info("fencing lifted: runs may start again")
        self.failures = 0
        self.fenced = False
        self.standby_since = None
        self.last_success = self.clock()
        self.sync_seconds = desired.sync_seconds
        self.fence_seconds = desired.fence_seconds
        self.final_reported.update(report.key for report in reports if report.final)

    def _claim(self, cluster_id: str) -> bool:
        """Let the driver adopt the cluster's runs it finds (the first time); False when it cannot look now:
        acting on the desired state without knowing what runs would start runs twice."""
        try:
            adopted = self.driver.claim(cluster_id)
        except DriverUnavailable as error:
            log.error("cannot see what runs here, nothing started or stopped this time: %s", error)
            return False
        for run in adopted:
            where = f" ({run.handle})" if run.handle else ""
            log.info("adopted %s generation %s%s", run.deployment_id, run.generation, where)
        return True

    def _reconcile(self, desired: SyncResponse) -> None:
        runs = {run.key: run for run in self.driver.runs()}
        observed = [
            Observed(
                key=run.key,
                grace_seconds=run.grace_seconds,
                finished=self.driver.result(run) is not None,
                stopping=run.stopping,
                final_reported=run.key in self.final_reported,
            )
            for run in runs.values()
        ]
        plan = reconcile(desired, observed, set(self.reports_without_run))
        for key in plan.forget:
            del self.reports_without_run[key]
            self.final_reported.discard(key)
        for key in plan.remove:
            self.driver.remove(runs[key])
            self.final_reported.discard(key)
            self._logged_endings.discard(key)
        for stop in plan.stop:
            self._stop(runs[stop.key], stop.grace_seconds, stop.reason)
        for key in plan.lost:
            log.warning("%s generation %s: the server thinks it runs here; %s", key[0], key[1], LOST_MESSAGE)
            self.reports_without_run[key] = Report(key[0], key[1], "failed", _now_iso(), message=LOST_MESSAGE)
        for key in plan.absent:
            self.reports_without_run[key] = Report(key[0], key[1], "stopped", _now_iso(), message=ABSENT_MESSAGE)
        for item in plan.start:
            self._start(item)

    def _start(self, item: RunItem) -> None:
        run = self.driver.start(_spec(item))
        if run.preparing:
            return
        result = self.driver.result(run)
        if result is not None and result.state == "failed":
            self._logged_endings.add(run.key)
            log.error(
                "%s generation %s (%s) could not start: %s",
                item.deployment_id,
                item.generation,
                item.name,
                result.message,
            )
            return
        where = f": {run.handle}" if run.handle else ""
        log.info("started %s generation %s (%s)%s", item.deployment_id, item.generation, item.name, where)

    def _stop(self, run: Run, grace_seconds: float, reason: str) -> None:
        log.info("stopping %s generation %s (grace %g s): %s", run.deployment_id, run.generation, grace_seconds, reason)
        self.driver.stop(run, grace_seconds, reason)

    def _unreachable(self, error: Unavailable) -> float:
        self.failures += 1
        delay = min(BACKOFF_CAP_SECONDS, max(1.0, self.sync_seconds) * 2 ** (self.failures - 1))
        delay = self.jitter(delay / 2, delay)
        log.warning("sync failed (%d in a row): %s; retrying in %.1f s", self.failures, error, delay)
        self._fence_if_due()
        return delay

    def _standby(self, held: LeaseHeld) -> float:
        if self.standby_since is None:
            self.standby_since = self.clock()
            log.warning("standing by: %s", held)
        else:
            log.info("still standing by: %s", held)
        self._fence_if_due()
        delay = held.retry_after if held.retry_after is not None else STANDBY_SECONDS
        return self.jitter(delay, delay * 1.2)

    def _fence_if_due(self) -> None:
        """No sync for fence_seconds: the server may have given our runs to another agent; stop them all."""
        if self.fenced or self.last_success is None or self.fence_seconds is None:
            return
        silent = self.clock() - self.last_success
        if silent < self.fence_seconds:
            return
        self.fenced = True
        running = [run for run in self.driver.runs() if self.driver.result(run) is None]
        log.error(
            "no successful sync for %.0f s (fence %g s): stopping all %d run(s)",
            silent,
            self.fence_seconds,
            len(running),
        )
        for run in running:
            self._stop(run, run.grace_seconds, "fenced: the agent lost touch with the server")

    def _until_fence(self, delay: float) -> float:
        """Wake up no later than the fencing deadline, so fencing is never late by a backoff."""
        healthy = self.failures == 0 and self.standby_since is None
        if healthy or self.fenced or self.last_success is None or self.fence_seconds is None:
            return delay
        remaining = self.last_success + self.fence_seconds - self.clock()
        return max(0.0, min(delay, remaining))


def _spec(item: RunItem) -> RunSpec:
    return RunSpec(
        deployment_id=item.deployment_id,
        generation=item.generation,
        name=item.name,
        image=item.image,
        command=item.command,
        env=item.env,
        cpu=item.resources.cpu,
        ram_gb=item.resources.ram_gb,
        gpu=item.resources.gpu,
        grace_seconds=item.grace_seconds,
    )


def _log_ending(run: Run, result: Result) -> None:
    what = f"{run.deployment_id} generation {run.generation}"
    if result.state == "exited":
        detail = f": {result.message}" if result.message else ""
        log.info("%s exited with code %s%s", what, result.exit_code, detail)
    else:
        log.info("%s %s: %s", what, result.state, result.message)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _now_iso() -> str:
    return _iso(datetime.now(UTC))
