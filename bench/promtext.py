"""Just enough of the Prometheus text format to read the daemon's own figures, quickly.

Reads only the families asked for, by name prefix: ``prometheus_client.parser`` is too slow
for a large scrape.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

_LABEL: Final = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float


def parse(text: str, prefixes: Iterable[str]) -> list[Sample]:
    wanted = tuple(prefixes)
    samples = []
    for line in text.splitlines():
        if not line.startswith(wanted):
            continue
        brace = line.find("{")
        if brace >= 0:
            close = line.rfind("}")
            name = line[:brace]
            labels = dict(_LABEL.findall(line[brace + 1 : close]))
            rest = line[close + 1 :].split()
        else:
            name, *rest = line.split()
            labels = {}
        samples.append(Sample(name, labels, float(rest[0])))
    return samples


class Scrape:
    """The samples of one scrape, with sums by name and label filter."""

    def __init__(self, samples: list[Sample]) -> None:
        self.samples = samples

    def total(self, name: str, **labels: str) -> float:
        return sum(
            s.value
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    def values(self, name: str) -> list[float]:
        return [s.value for s in self.samples if s.name == name]

    def buckets(self, name: str) -> list[tuple[float, float]]:
        """(upper bound, cumulative count) of a histogram without other labels, sorted."""
        pairs = [
            (math.inf if s.labels["le"] == "+Inf" else float(s.labels["le"]), s.value)
            for s in self.samples
            if s.name == f"{name}_bucket"
        ]
        return sorted(pairs)


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' ``histogram_quantile``: linear within the bucket holding the q-th rank."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return buckets[-1][0]


def bucket_delta(
    before: list[tuple[float, float]], after: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    previous = dict(before)
    return [(bound, count - previous.get(bound, 0.0)) for bound, count in after]
