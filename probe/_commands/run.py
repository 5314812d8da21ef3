"""The running daemon: wiring, lifecycle, signals and graceful shutdown.

Root tasks (named, in one anyio task group): the committer, the leases, the targets (the file
and HTTP sources, enrollment's retirements) and the retargeter that applies their changes, the
reloader, the status reporter, the watchdog and the scheduler (one loop per target), while
``run`` waits to stop. SIGHUP re-reads the configuration: each changed setting is applied, or
logged as needing a restart (``server``, ``state``). SIGTERM/SIGINT set ``should_exit``:
scheduling stops, rounds in flight get ``probe.timeout`` + 1 s to finish and are then
cancelled, the last batch is committed, the HTTP server closes (open watches end at once),
and ``run`` returns 0. A second signal skips the wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import gc
import math
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection, Hashable, Iterator
from pathlib import Path
from typing import Final

import aiohttp
import anyio
from aiohttp import web
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from probe._cogs.logs import configure, get_logger
from probe._cogs.sdnotify import Notifier, run_watchdog
from probe._config import Config, ConfigError, load_config
from probe._config.models import ProbeConfig
from probe._core.fold import FoldSettings
from probe._core.model import from_epoch
from probe._core.record import JobRecord
from probe._core.restarts import Lags, widen
from probe._flink.client import FlinkClient
from probe._runtime.book import EventRetention, JobBook
from probe._runtime.catalog import JobCatalog
from probe._runtime.instruments import DaemonMetrics
from probe._runtime.journal import Journal
from probe._runtime.ownership import LeaseChanges, Ownership
from probe._runtime.prober import Prober, TargetLags
from probe._runtime.scheduler import Scheduler, Target
from probe._runtime.sources import declare_static_jobs
from probe._runtime.targets import TargetSources
from probe._store import Lease, Store, StoreError, open_store
from probe._store.base import default_instance
from probe._targets import EffectiveTarget
from probe._version import __version__
from probe._web.metrics import JobSeriesRenderer, StateCollector
from probe._web.server import UNAUTHENTICATED_PATHS, Api, Enrollment, Liveness

log = get_logger("flink_probe.daemon")

# The probe loop counts as stalled (GET /healthz answers 503) after this many intervals (the
# running probe.interval) of silence; a round may legitimately run for a few intervals.
STALE_INTERVALS = 5
RESTART_SECTIONS: Final = ("server", "state")
"""What a reload cannot change: the listening socket and the open store."""
SHUTDOWN_GRACE_EXTRA = 1.0


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        config_path: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.config_path = config_path
        """Re-read on SIGHUP (None: the file of $FLINK_PROBE_CONFIG, or the sidecar default)."""
        self.clock = clock
        self.should_exit = anyio.Event()
        self._reload_requested = anyio.Event()
        self._force_exit = False
        self._session: aiohttp.ClientSession
        """The targets' HTTP client session: set by `run`, replaced by a reload that changes
        the connection limits."""
        self._sources: TargetSources
        """Every target this daemon wants, from every source: set by `run`."""
        self.bound_port: int | None = None
        """The port the HTTP server listens on (useful with ``listen: ...:0`` in tests)."""
        self.notifier = Notifier.from_environ()
        """systemd's notification socket (Type=notify; does nothing when not under systemd)."""
        self._instance = config.state.instance or default_instance()
        """This daemon's name in leases and logs."""
        self._store: Store
        self._ownership: Ownership
        """The store and this daemon's leases in it: set by `run`."""

    async def run(self) -> int:
        """Run until asked to stop. Raises StoreError (exit 1) if the state cannot be opened."""
        state = self.config.state
        store = await anyio.to_thread.run_sync(
            functools.partial(
                open_store, state.location, password=state.password, instance=self._instance
            )
        )
        try:
            with _garbage_collector_tuned():
                return await self._run_with_store(store)
        finally:
            store.close()

    async def _run_with_store(self, store: Store) -> int:
        config = self.config
        state = config.state
        if state.shared:
            assert state.lease_ttl is not None, "Config sets it"
            # The book starts empty: it takes a target's Jobs from the store with its lease.
            ownership = Ownership(
                store, state.lease_ttl, min(state.max_clock_skew, state.lease_ttl / 3)
            )
            book = JobBook(store, fencing=ownership, retention=_retention(config))
        else:
            # The single owner of the file holds every lease for good, and has every Job.
            ownership = Ownership(store, math.inf)
            book = await anyio.to_thread.run_sync(JobBook.load, store, _retention(config))
        self._store, self._ownership = store, ownership
        registry = CollectorRegistry(auto_describe=True)
        metrics = DaemonMetrics(registry)
        async with self._client_sessions(config.probe) as discovery_session:
            self._sources = TargetSources(config, metrics, discovery_session)
            await self._sources.read_files()  # so that the first claim covers their targets
            await self._adopt(book, (await ownership.claim(self._wanted())).acquired)
            await book.commit()
            shared = {"instance": self._instance, "held": sorted(ownership.held)}
            log.info(
                "state loaded",
                # The URL carries no password: the configuration refuses one there.
                path=str(state.location),
                jobs=len(book.exposed),
                probing=sum(1 for r in book.working() if r.probing),
                **(shared if state.shared else {}),
            )
            targets = [
                self._target(target)
                for name, target in self._sources.current.targets.items()
                if ownership.holds(name)
            ]
            scheduler = Scheduler(
                book,
                targets,
                config.probe.interval,
                metrics,
                declared=[job.id for job in config.jobs],
                clock=self.clock,
            )
            registry.register(
                StateCollector(book, lambda: scheduler.health, ownership, self._wanted)
            )
            job_series = JobSeriesRenderer(book, config.probe.metrics_retention, self.clock)
            liveness = Liveness(
                # Without targets no probe loop runs, so none can stall.
                heartbeat=lambda: scheduler.heartbeat if scheduler.targets else time.monotonic(),
                stale_after=lambda: STALE_INTERVALS * self.config.probe.interval,
                targets_probed=lambda: self._probed_once(scheduler),
                leases_settled=lambda: ownership.settled and ownership.reachable,
                lease_error=lambda: ownership.error,
            )
            web_security = config.server.web_security  # server.web_config: TLS, basic auth
            catalog = JobCatalog(
                book, store if state.shared else None, lambda: self.config.probe.interval
            )
            enrollment = Enrollment(
                self._sources.enroll, scheduler.first_round, scheduler.health_of
            )
            journal = Journal(store, book, poll=lambda: self.config.probe.interval)
            api = Api(
                book,
                registry,
                liveness,
                job_series,
                catalog,
                enrollment,
                journal,
                max_watches=config.server.max_watches,
            )
            app = api.app(web_security.middlewares(UNAUTHENTICATED_PATHS))
            runner = web.AppRunner(app, handle_signals=False)
            await runner.setup()
            try:
                site = web.TCPSite(
                    runner,
                    config.server.host,
                    config.server.port,
                    ssl_context=web_security.ssl_context,
                )
                await site.start()
                self.bound_port = _bound_port(runner)
                log.info(
                    "listening",
                    address=f"{web_security.scheme}://{config.server.host}:{self.bound_port}/",
                    targets=[t.name for t in targets],
                    interval=config.probe.interval,
                )
                await self._serve(book, scheduler, api)
            finally:
                await runner.cleanup()
        log.info("stopped", committed=book.pending == 0)
        return 0

    async def _serve(self, book: JobBook, scheduler: Scheduler, api: Api) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._reload_requested.set())
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(book.run_committer, name="committer")
                tg.start_soon(
                    self._ownership.run,
                    self._wanted,
                    functools.partial(self._apply_leases, book, scheduler, api.catalog),
                    self._claim_period,
                    name="leases",
                )
                tg.start_soon(self._sources.run, name="targets")
                tg.start_soon(self._retargeter, scheduler, name="retargeter")
                tg.start_soon(self._reloader, book, scheduler, api, name="reloader")
                tg.start_soon(self._report_status, book, scheduler, name="status")
                tg.start_soon(
                    run_watchdog, self.notifier, lambda: not api.liveness.stalled(), name="watchdog"
                )
                async with anyio.create_task_group() as probing:
                    loops_done = anyio.Event()

                    async def run_scheduler() -> None:
                        await scheduler.run()
                        loops_done.set()

                    probing.start_soon(run_scheduler, name="scheduler")
                    await self.should_exit.wait()
                    self.notifier.stopping()
                    scheduler.stop()
                    grace = self.config.probe.timeout + SHUTDOWN_GRACE_EXTRA
                    log.info("stopping: letting probe rounds in flight finish", grace=grace)
                    with anyio.move_on_after(0 if self._force_exit else grace):
                        await loops_done.wait()
                    probing.cancel_scope.cancel()
                tg.cancel_scope.cancel()
            # Rounds that finished are in the book; make them durable (times included) before
            # leaving.
            with anyio.CancelScope(shield=True):
                await book.commit(touched=True)
                # Only now: a successor takes over at its next claim, from what was committed.
                await self._ownership.release()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)

    async def _report_status(self, book: JobBook, scheduler: Scheduler) -> None:
        """READY=1 once the state is loaded and every target was probed once (what /readyz
        says), then a short STATUS= line every interval for ``systemctl status``."""
        await scheduler.first_round_done.wait()
        await book.commit()
        self.notifier.ready(status=_summary(book, scheduler))
        log.info("ready", targets=len(scheduler.targets), jobs=len(book.exposed))
        while True:
            await anyio.sleep(self.config.probe.interval)
            self.notifier.status(_summary(book, scheduler))

    async def _reloader(self, book: JobBook, scheduler: Scheduler, api: Api) -> None:
        """SIGHUP: re-read the configuration; an invalid one is refused, the old one runs on."""
        while True:
            await self._reload_requested.wait()
            self._reload_requested = anyio.Event()
            await self.reload(book, scheduler, api)

    async def reload(self, book: JobBook, scheduler: Scheduler, api: Api) -> bool:
        self.notifier.reloading()
        try:
            return await self._reload(book, scheduler, api)
        finally:
            self.notifier.ready()

    async def _reload(self, book: JobBook, scheduler: Scheduler, api: Api) -> bool:
        log.info("reloading configuration", path=str(self.config_path or "(default)"))
        try:
            new = await anyio.to_thread.run_sync(load_config, self.config_path)
        except ConfigError as exc:
            log.error("configuration refused; keeping the running one", errors=exc.errors)
            return False
        old = self.config
        changed = _changed_settings(old, new)
        new = new.model_copy(update={s: getattr(old, s) for s in RESTART_SECTIONS})
        self.config = new
        if any(key.startswith("logging.") for key in changed):
            configure(new.logging.level, new.logging.format)
        for key in changed:
            if key.partition(".")[0] in RESTART_SECTIONS:
                log.warning(f"reload: {key} changed; needs a restart")
            else:
                log.info(f"reload: {key} changed; applied")
        book.retention = _retention(new)
        if "probe.metrics_retention" in changed:
            api.job_series = JobSeriesRenderer(book, new.probe.metrics_retention, self.clock)
        retired = None
        if {"probe.concurrency", "probe.per_target_concurrency"} & set(changed):
            # A connection pool's limits are fixed: the targets restart on a new one.
            retired, self._session = self._session, _client_session(new.probe)
        held = [job for job in new.jobs if self._ownership.holds(job.target)]
        book.create(declare_static_jobs(held, book.get, from_epoch(self.clock())))
        self._sources.reconfigure(new)  # enrollment, targets files and http_sd
        self._retarget(scheduler)
        if retired is not None:
            await retired.close()  # after reconfigure cancelled the rounds that used it
        log.info("configuration reloaded", targets=[t.name for t in new.targets])
        return True

    async def _retargeter(self, scheduler: Scheduler) -> None:
        """Apply each change of the targets that the sources declare."""
        while True:
            await self._sources.changes()
            self._retarget(scheduler)

    def _retarget(self, scheduler: Scheduler) -> None:
        """Run each wanted target this daemon holds as it is declared now (a changed one
        restarts, one no longer wanted stops), and claim at once: new targets are taken,
        removed ones given back."""
        wanted = self._sources.current.targets
        held = {name: target for name, target in wanted.items() if self._ownership.holds(name)}
        scheduler.reconfigure(
            {name: self._settings(target) for name, target in held.items()},
            lambda name: self._target(held[name]),
            self.config.probe.interval,
            [job.id for job in self.config.jobs],
        )
        self._ownership.request_claim()

    def _probed_once(self, scheduler: Scheduler) -> bool:
        """Every target run here was probed once, enrolled ones aside: a scrape of ``/probe``
        must not make the daemon unready, taking it out of the Service the scrape came by."""
        wanted = self._sources.current.targets
        return all(
            target.health.probed
            for name, target in scheduler.targets.items()
            if (declared := wanted.get(name)) is None or declared.source != "enrolled"
        )

    def _wanted(self) -> list[str]:
        """The targets this daemon asks leases of: those of every source, merged (configured,
        from targets files and http_sd, enrolled)."""
        return list(self._sources.current.targets)

    def _claim_period(self) -> float:
        """Every round, and often enough that two claims in a row may fail."""
        return min(self.config.probe.interval, self._ownership.ttl / 3)

    async def _apply_leases(
        self, book: JobBook, scheduler: Scheduler, catalog: JobCatalog, changes: LeaseChanges
    ) -> None:
        """Stop the targets whose lease is lost, then load and start the newly held ones."""
        for name in sorted(changes.lost):
            scheduler.stop_target(name)
            if self.config.state.shared:
                catalog.keep(book.drop_targets([name]))
        wanted = self._sources.current.targets
        acquired = [lease for lease in changes.acquired if lease.target in wanted]
        for name in await self._adopt(book, acquired):
            target = self._sources.current.targets.get(name)  # may have left while loading
            if target is not None:
                scheduler.start_target(self._target(target))

    async def _adopt(self, book: JobBook, leases: Collection[Lease]) -> list[str]:
        """Take newly held targets into the book: their stored Jobs (on a shared store; the
        single owner's book has them all), then their declared Jobs not stored yet. Returns
        the targets taken; one whose Jobs cannot be loaded is given up until the next claim."""
        names = [lease.target for lease in leases]
        if not names:
            return []
        state = self.config.state
        if state.shared:
            try:
                rows = await anyio.to_thread.run_sync(self._store.load, names)
                records = [JobRecord.from_document(row.document) for row in rows]
            except (StoreError, ValueError, KeyError, TypeError) as exc:
                error = str(exc) if isinstance(exc, StoreError) else exc.__class__.__name__
                log.error(
                    "loading the Jobs of newly held targets failed", targets=names, error=error
                )
                self._ownership.forget(names)
                return []
            # Another daemon's clock stamped these times: take them as if it were off by the
            # most it may be (docs/design.md, "Takeover").
            book.adopt(
                names,
                (
                    dataclasses.replace(r, ledger=widen(r.ledger, state.max_clock_skew))
                    for r in records
                ),
            )
        declared = [job for job in self.config.jobs if job.target in names]
        book.create(declare_static_jobs(declared, book.get, from_epoch(self.clock())))
        return names

    @contextlib.asynccontextmanager
    async def _client_sessions(self, probe: ProbeConfig) -> AsyncIterator[aiohttp.ClientSession]:
        """The HTTP client session the targets share (a reload may replace it), and the one of
        http_sd (yielded); the ones in use are closed on the way out."""
        self._session = _client_session(probe)
        try:
            async with _client_session(probe) as discovery:
                yield discovery
        finally:
            await self._session.close()

    def _on_signal(self, signum: int) -> None:
        if self.should_exit.is_set():
            self._force_exit = True
            log.warning("second signal: stopping now", signal=signal.Signals(signum).name)
        else:
            log.info("signal received: shutting down", signal=signal.Signals(signum).name)
        self.should_exit.set()

    def _settings(self, target: EffectiveTarget) -> Hashable:
        """Everything a target's loop is built from: a change restarts it."""
        return (target.config, target.declared.deployment, self.config.probe, self._session)

    def _target(self, effective: EffectiveTarget) -> Target:
        target, probe = effective.config, self.config.probe
        client = FlinkClient(
            self._session,
            target.url,
            timeout=probe.timeout,
            max_body_bytes=probe.max_body_bytes,
            headers=target.headers,
            ssl=target.ssl_context,
            server_name=target.server_name,
            auth=target.credentials(),
        )
        prober = Prober(
            client,
            TargetLags(
                target.overview_max_age,
                target.metrics_max_age,
                probe.interval,
                probe.metrics_refresh,
            ),
            probe.per_target_concurrency,
            self.clock,
        )
        return Target(
            name=target.name,
            namespace=target.namespace,
            discover=target.discover,
            deployment=effective.declared.deployment,
            settings=self._settings(effective),
            prober=prober,
            fold_settings=FoldSettings(
                not_found_grace=probe.not_found_grace,
                start_timeout=probe.start_timeout,
                lags=Lags(target.overview_max_age, target.metrics_max_age, target.max_clock_skew),
            ),
        )


# Collect the youngest generation after this many new container objects (Python's default is
# 700): the daemon's garbage is nearly all acyclic and freed by reference counting.
GC_YOUNG_THRESHOLD = 50_000


@contextlib.contextmanager
def _garbage_collector_tuned() -> Iterator[None]:
    """Thousands of Jobs keep millions of objects alive, and every cyclic collection walks
    them. Modules, settings and the loaded state live as long as the daemon: move them out of
    the collector's view, and collect less often. Undone on the way out (the daemon also runs
    inside test processes)."""
    gc.collect()
    gc.freeze()
    threshold = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


def _client_session(probe: ProbeConfig) -> aiohttp.ClientSession:
    """One connection pool for every target, bounded by ``probe.concurrency`` in all and
    ``probe.per_target_concurrency`` per target."""
    connector = aiohttp.TCPConnector(
        limit=probe.concurrency, limit_per_host=probe.per_target_concurrency
    )
    return aiohttp.ClientSession(
        connector=connector, headers={"User-Agent": f"flink-probe/{__version__}"}
    )


def _changed_settings(old: Config, new: Config) -> list[str]:
    """``section.key`` of every setting of the mapping sections that differs, and every other
    top-level key that does (targets and jobs are logged as they start and stop)."""
    changed: list[str] = []
    for section in type(old).model_fields:
        before, after = getattr(old, section), getattr(new, section)
        if section in ("targets", "jobs"):
            continue
        if isinstance(before, BaseModel) and isinstance(after, BaseModel):
            fields = type(before).model_fields
            changed += [f"{section}.{k}" for k in fields if getattr(before, k) != getattr(after, k)]
        elif before != after:  # targets_files, targets_refresh, targets_http set or removed
            changed.append(section)
    if old.server != new.server and not any(key.startswith("server.") for key in changed):
        changed.append("server.web_config")  # the same file, with new content
    return changed


def _summary(book: JobBook, scheduler: Scheduler) -> str:
    """E.g. ``jobs: 3 STARTED, 1 FAILED; targets up: 2/2``."""
    by_state = Counter(record.job.state.value for record in book.exposed.values())
    jobs = ", ".join(f"{count} {state}" for state, count in sorted(by_state.items())) or "none"
    up = sum(1 for health in scheduler.health.values() if health.up)
    return f"jobs: {jobs}; targets up: {up}/{len(scheduler.targets)}"


def _bound_port(runner: web.AppRunner) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return 0


def _retention(config: Config) -> EventRetention:
    return EventRetention(config.events.retention, config.events.max_per_job)
