"""Several daemons sharing one PostgreSQL database: each replica's figures in the steady state.

``replicas`` daemons with one configuration (every target of the tier) start together on one
database and split the targets between them by their leases. Once every replica holds its
share (from the ``lease acquired`` / ``lease lost`` / ``lease given back`` log lines) and
every Job is STARTED and credited, one steady window measures every replica as
``bench/run.py`` measures one daemon: CPU, probes done against due, lag, RSS, commits. All
replicas share the daemon's core, as one daemon's targets would. No render, scraped or
profile window: the figure compared is a replica's steady state against a single daemon
probing its share, measured in the same run.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from . import code
from .daemon import Daemon
from .rounds import LagModel
from .run import ScenarioRun, mib
from .tier import free_ports

LEASE_EVENTS = {
    "lease acquired": True,
    "lease lost; target stopped": False,
    "lease given back": False,
}
"""Log lines that change what a replica holds: held (True) or not (False) from then on."""


class Holdings:
    """The targets each replica holds, from its log."""

    def __init__(self, replicas: list[Daemon]) -> None:
        self.replicas = replicas
        self.held: list[set[str]] = [set() for _ in replicas]
        self._seen = [0] * len(replicas)
        self.changed_at = time.time()
        """Wall clock of the last change seen."""

    def update(self) -> None:
        for index, replica in enumerate(self.replicas):
            events = replica.log.events
            new, self._seen[index] = events[self._seen[index] :], len(events)
            for entry in new:
                holds = LEASE_EVENTS.get(str(entry.get("event")))
                if holds is None:
                    continue
                target = str(entry.get("target"))
                if holds:
                    self.held[index].add(target)
                else:
                    self.held[index].discard(target)
                self.changed_at = time.time()

    def counts(self) -> list[int]:
        return [len(held) for held in self.held]


class ReplicasRun(ScenarioRun):
    """One scenario with ``replicas`` daemons on one database."""

    async def _run_daemon(self) -> None:
        assert self.session is not None
        assert self.tier is not None
        s = self.s
        self.replicas: list[Daemon] = []
        for index, port in enumerate(free_ports(s.replicas)):
            instance = f"replica-{chr(ord('a') + index)}"
            config = self._write_config(instance, port)
            process = self._process(config, f"{instance}.log", port)
            self.replicas.append(Daemon(process, self.session))
        self.started.extend(self.replicas)
        self.result["probe_digest"] = code.digest(self.o.code)
        self.say(
            f"[{s.name}] {s.replicas} replicas: warming up (leases settled, every Job STARTED,"
            " its count credited)"
        )
        for replica in self.replicas:
            replica.process.start()
        for replica in self.replicas:
            await replica.wait_http("/healthz", deadline=60)
        holdings = Holdings(self.replicas)
        self.result["leases"] = await self._settle(holdings)
        self.result["warmup"] = await self._warm_up(self.replicas)
        self.result["replicas"] = await self._steady_replicas(holdings)
        for replica in self.replicas:
            replica.process.terminate()  # all at once: none takes over another's targets
        for figures, replica in zip(self.result["replicas"], self.replicas, strict=True):
            figures["shutdown"] = self._stop(replica)

    async def _settle(self, holdings: Holdings) -> dict[str, Any]:
        """Until the replicas hold every target, none more than its share, and no lease moved
        for one interval."""
        s = self.s
        share = math.ceil(s.targets / s.replicas)
        began = min(replica.process.started_at for replica in self.replicas)
        deadline = time.time() + 20 * s.interval + 60
        while time.time() < deadline:
            for replica in self.replicas:
                replica.check_alive()
            holdings.update()
            counts = holdings.counts()
            balanced = sum(counts) == s.targets and max(counts) <= share
            if balanced and time.time() - holdings.changed_at >= s.interval:
                return {
                    "settled": True,
                    "settled_after_s": round(holdings.changed_at - began, 3),
                    "held": counts,
                }
            await asyncio.sleep(min(1.0, s.interval / 4))
        self.say(f"[{s.name}] warning: leases not settled ({holdings.counts()}); measuring anyway")
        return {"settled": False, "settled_after_s": None, "held": holdings.counts()}

    async def _steady_replicas(self, holdings: Holdings) -> list[dict[str, Any]]:
        """One steady window for all replicas; each one's figures for the targets it holds."""
        assert self.tier is not None
        s = self.s
        self.say(f"[{s.name}] steady window: {s.intervals} intervals, no scrapes")
        jobs_of = {target.name: len(target.jids) for target in self.tier.targets}
        holdings.update()
        held = [frozenset(targets) for targets in holdings.held]
        before = [(await replica.scrape())[0] for replica in self.replicas]
        await asyncio.sleep(min(2.0, s.interval / 2))  # let rounds delayed by the scrapes pass
        memory_before = [replica.process.memory() for replica in self.replicas]
        seconds = s.intervals * s.interval
        windows = await self._windows([r.process for r in self.replicas], seconds)
        memory = [replica.process.memory() for replica in self.replicas]
        after = [await replica.scrape() for replica in self.replicas]
        holdings.update()
        moved = [
            frozenset(targets) != was for targets, was in zip(holdings.held, held, strict=True)
        ]
        results = []
        for index, replica in enumerate(self.replicas):
            window = windows[index]
            await self._wait_for_rounds(replica, window.start + seconds, len(held[index]))
            reference = [
                r for r in replica.log.rounds if window.start - 1 <= r.began < window.end + 1
            ]
            model = LagModel(s.interval, reference, per_target=True)
            jobs = sum(jobs_of[name] for name in held[index])
            steady = self._steady_figures(
                replica,
                window,
                (before[index], *after[index]),
                model,
                len(held[index]),
                jobs,
            )
            results.append(
                {
                    "name": replica.process.config.stem,
                    "targets_held": len(held[index]),
                    "jobs": jobs,
                    "leases_moved_during_window": moved[index],
                    "steady": steady,
                    "memory": {
                        "rss_steady_mib": mib(
                            max(memory[index].rss_kib, memory_before[index].rss_kib)
                        ),
                        "peak_mib": mib(memory[index].peak_kib),
                    },
                    "warmup_commits": self.result["warmup"]["commits"][index],
                }
            )
        return results
