"""The scheduler's grid: every target keeps its place in the interval, round after round."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from probe._runtime.scheduler import grid_point

INTERVALS = st.sampled_from([0.1, 0.25, 1.0, 3.0, 10.0, 15.0, 60.0, 300.0])


@given(
    grid=st.floats(min_value=0.0, max_value=10_000_000.0),
    interval=INTERVALS,
    slot=st.integers(min_value=0, max_value=100_000),
)
def test_the_round_after_a_round_on_time_is_the_next_grid_point(
    grid: float, interval: float, slot: int
) -> None:
    """A round that ended before its next slot runs in that slot: none is skipped."""
    due = grid_point(grid, interval, grid + slot * interval)
    following = grid_point(grid, interval, due + interval)
    assert round((due - grid) / interval) == slot
    assert round((following - grid) / interval) == slot + 1


@given(
    grid=st.floats(min_value=0.0, max_value=10_000_000.0),
    interval=INTERVALS,
    late=st.floats(min_value=0.001, max_value=0.999),
    slot=st.integers(min_value=0, max_value=100_000),
)
def test_a_time_between_points_goes_to_the_next_one(
    grid: float, interval: float, late: float, slot: int
) -> None:
    at = grid + (slot + late) * interval
    point = grid_point(grid, interval, at)
    assert point >= at
    assert round((point - grid) / interval) == slot + 1


def test_times_before_the_grid_start_go_to_its_first_point() -> None:
    assert grid_point(100.0, 10.0, 42.0) == 100.0
