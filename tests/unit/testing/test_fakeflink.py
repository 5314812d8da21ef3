"""The simulated Flink cluster: real shapes, scripted jobs, caches, failovers and faults."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from probe._core.model import FlinkJobStatus
from probe._flink.client import FailureKind, FlinkClient, FlinkError
from probe.testing import (
    DEMO_JOBS,
    Endpoint,
    FakeCluster,
    FakeFlinkServer,
    Fault,
    FaultKind,
    serve_in_thread,
)

# Bodies served by a real Flink 2.3.0: standalone, and across ZooKeeper HA failovers.
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
REST = FIXTURES / "flink-2.3.0-rest"
HA = FIXTURES / "flink-2.3.0-ha"
JID = "018212e45da3a0cce413edc0a12d63c1"
OTHER = "971a56e8f155db681c57c7078496ec4d"
UNKNOWN = "0" * 32
T0 = 1_795_876_000.0


class Clock:
    """A settable clock for the cluster; the sockets still run on real time."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def real(folder: Path, name: str) -> Any:
    path = folder / name
    if not path.is_file():
        pytest.fail(f"fixture {path} is missing")
    return json.loads(path.read_bytes())


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cluster(clock: Clock) -> FakeCluster:
    return FakeCluster(clock=clock)


@pytest.fixture
async def server(cluster: FakeCluster) -> AsyncIterator[FakeFlinkServer]:
    async with FakeFlinkServer(cluster) as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def client(session: aiohttp.ClientSession, server: FakeFlinkServer) -> FlinkClient:
    return FlinkClient(session, server.url, timeout=2.0)


async def fetch(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url, allow_redirects=False) as response:
        return response.status, json.loads(await response.read())


async def flink_failure(call: Any) -> FlinkError:
    with pytest.raises(FlinkError) as caught:
        await call
    return caught.value


# -- shapes -----------------------------------------------------------------------------


async def test_overview_and_details_have_real_flinks_keys(
    cluster: FakeCluster, server: FakeFlinkServer, session: aiohttp.ClientSession
) -> None:
    cluster.submit("flinkreal-restart", JID)
    _, overview = await fetch(session, f"{server.url}/jobs/overview")
    (real_entry,) = real(REST, "26_jobs_overview_one_running.json")["jobs"]
    (entry,) = overview["jobs"]
    assert entry.keys() == real_entry.keys()
    assert entry["tasks"].keys() == real_entry["tasks"].keys()

    status, details = await fetch(session, f"{server.url}/jobs/{JID}")
    real_details = real(REST, "20_job_restart_running.json")
    assert status == 200
    assert details.keys() == real_details.keys()
    assert details["timestamps"].keys() == real_details["timestamps"].keys()
    assert details["vertices"][0].keys() == real_details["vertices"][0].keys()
    assert details["plan"].keys() == real_details["plan"].keys()
    assert details["status-counts"] == real_details["status-counts"]
    assert (details["state"], details["end-time"], details["application-id"]) == (
        "RUNNING",
        -1,
        JID,
    )


async def test_an_initializing_job_is_the_stub_flink_serves(
    cluster: FakeCluster, server: FakeFlinkServer, session: aiohttp.ClientSession
) -> None:
    cluster.submit("flinkreal-restart", JID, state=FlinkJobStatus.INITIALIZING)
    _, details = await fetch(session, f"{server.url}/jobs/{JID}")
    stub = real(HA, "failover2__8081__restart__job-detail__s03-INITIALIZING.json")
    assert details.keys() == stub.keys()
    for key in ("application-id", "schedulerType", "vertices", "plan"):
        assert details[key] == stub[key]


async def test_unknown_jobs_answer_as_flink_does(
    server: FakeFlinkServer, session: aiohttp.ClientSession
) -> None:
    base = f"{server.url}/jobs/{UNKNOWN}"
    status, body = await fetch(session, base)
    assert status == 404
    assert body["errors"][0].startswith(
        f"org.apache.flink.runtime.rest.NotFoundException: Job {UNKNOWN} not found"
    )
    status, body = await fetch(session, f"{base}/status")
    assert status == 500
    assert body["errors"][0] == real(REST, "81_job_unknown_status_500.json")["errors"][0]
    assert f"Could not find Flink job ({UNKNOWN})" in body["errors"][1]
    assert await fetch(session, f"{base}/metrics?get=numRestarts") == (200, [])
    assert (await fetch(session, f"{base}/exceptions"))[0] == 404
    status, body = await fetch(session, f"{server.url}/jobs/not-a-job-id")
    assert status == 400
    assert "Cannot resolve path parameter (jobid)" in body["errors"][0]
    assert await fetch(session, f"{server.url}/no/such/endpoint") == (
        404,
        real(REST, "86_unknown_endpoint_404.json"),
    )


async def test_a_failed_jobs_exceptions_have_real_flinks_shape(
    cluster: FakeCluster, server: FakeFlinkServer, session: aiohttp.ClientSession
) -> None:
    cluster.submit("flinkreal-fail", JID)
    cluster.fail(JID, "boom")
    _, body = await fetch(session, f"{server.url}/jobs/{JID}/exceptions")
    real_history = real(REST, "53_job_fail_exceptions.json")["exceptionHistory"]
    assert body["exceptionHistory"].keys() == real_history.keys()
    (newest,) = body["exceptionHistory"]["entries"]
    real_newest = real_history["entries"][0]
    assert newest.keys() == real_newest.keys()
    assert newest["concurrentExceptions"][0].keys() == real_newest["concurrentExceptions"][0].keys()


async def test_metrics_answer_strings(
    cluster: FakeCluster, server: FakeFlinkServer, session: aiohttp.ClientSession
) -> None:
    cluster.submit("job", JID)
    cluster.restart(JID, n=3)
    assert await fetch(session, f"{server.url}/jobs/{JID}/metrics?get=numRestarts") == (
        200,
        [{"id": "numRestarts", "value": "3"}],
    )


# -- scripting --------------------------------------------------------------------------


async def test_a_job_lifecycle_through_the_client(
    cluster: FakeCluster, client: FlinkClient
) -> None:
    jid = cluster.submit("orders")
    details = await client.job_details(jid)
    assert details is not None
    assert (details.name, details.state) == ("orders", FlinkJobStatus.RUNNING)
    assert details.start_time == int(T0 * 1000)
    assert await client.num_restarts(jid) == 0
    assert await client.newest_exception(jid) is None

    cluster.restart(jid, n=3, message="flaky sink")
    assert cluster.job(jid).num_restarts == 3
    assert await client.num_restarts(jid) == 3
    assert await client.newest_exception(jid) == "java.lang.RuntimeException: flaky sink"

    cluster.fail(jid, "boom")
    assert [job.state for job in await client.overview()] == [FlinkJobStatus.FAILED]
    assert await client.newest_exception(jid) == (
        "org.apache.flink.runtime.JobException: Recovery is suppressed by "
        "NoRestartBackoffTimeStrategy; caused by: java.lang.RuntimeException: boom"
    )

    cluster.remove(jid)
    assert cluster.jids == []
    assert await client.overview() == []
    assert await client.job_details(jid) is None
    assert await client.num_restarts(jid) is None
    assert await client.newest_exception(jid) is None


async def test_finish_and_cancel(cluster: FakeCluster, client: FlinkClient) -> None:
    cluster.submit("a", JID)
    cluster.submit("b", OTHER)
    cluster.finish(JID)
    cluster.cancel(OTHER, slow=True)
    states = {job.jid: job.state for job in await client.overview()}
    assert states == {JID: FlinkJobStatus.FINISHED, OTHER: FlinkJobStatus.CANCELLING}
    cluster.cancel(OTHER)
    details = await client.job_details(OTHER)
    assert details is not None
    assert details.state is FlinkJobStatus.CANCELED


def test_scripting_refuses_nonsense(cluster: FakeCluster) -> None:
    cluster.submit("a", JID)
    with pytest.raises(ValueError, match="exists"):
        cluster.submit("a", JID)
    with pytest.raises(ValueError, match="hex"):
        cluster.submit("a", "not-a-jid")
    with pytest.raises(KeyError):
        cluster.restart(UNKNOWN)
    with pytest.raises(ValueError, match="UNKNOWN"):
        cluster.set_state(JID, FlinkJobStatus.UNKNOWN)


# -- caches -----------------------------------------------------------------------------


async def test_overview_lag(cluster: FakeCluster, client: FlinkClient, clock: Clock) -> None:
    cluster.overview_lag = 3.0
    cluster.submit("orders", JID)
    assert await client.overview() == []  # just submitted: not in the cached overview yet
    details = await client.job_details(JID)  # a cache miss is fetched: the job is there
    assert details is not None
    clock.advance(3.0)
    assert [job.state for job in await client.overview()] == [FlinkJobStatus.RUNNING]

    cluster.set_state(JID, FlinkJobStatus.RESTARTING)
    clock.advance(2.9)
    assert [job.state for job in await client.overview()] == [FlinkJobStatus.RUNNING]
    details = await client.job_details(JID)
    assert details is not None
    assert details.state is FlinkJobStatus.RUNNING
    clock.advance(0.1)
    assert [job.state for job in await client.overview()] == [FlinkJobStatus.RESTARTING]


async def test_metrics_lag(cluster: FakeCluster, client: FlinkClient, clock: Clock) -> None:
    cluster.metrics_lag = 10.0
    cluster.submit("orders", JID)
    assert await client.num_restarts(JID) is None  # the fetcher has not run: []
    clock.advance(10.0)
    assert await client.num_restarts(JID) == 0
    cluster.restart(JID)
    clock.advance(5.0)
    cluster.restart(JID, n=2)
    clock.advance(5.0)
    assert await client.num_restarts(JID) == 1
    clock.advance(5.0)
    assert await client.num_restarts(JID) == 3


async def test_jobmanager_restart_with_ha(
    cluster: FakeCluster, client: FlinkClient, clock: Clock
) -> None:
    cluster.submit("orders", JID)
    cluster.submit("done", OTHER)
    cluster.restart(JID, n=3)
    cluster.finish(OTHER)
    clock.advance(40.0)
    cluster.jobmanager_restart()
    (job,) = await client.overview()  # a terminal job is not recovered
    assert (job.jid, job.state) == (JID, FlinkJobStatus.RUNNING)
    assert job.start_time == int((T0 + 40.0) * 1000)
    assert await client.num_restarts(JID) == 0
    assert await client.newest_exception(JID) is None


async def test_start_time_grows_even_if_the_clock_does_not(
    cluster: FakeCluster, client: FlinkClient
) -> None:
    cluster.submit("orders", JID)
    cluster.jobmanager_restart()
    details = await client.job_details(JID)
    assert details is not None
    assert details.start_time == int(T0 * 1000) + 1


async def test_a_former_standby_serves_the_old_count_after_the_new_start_time(
    cluster: FakeCluster, client: FlinkClient, clock: Clock
) -> None:
    cluster.metrics_lag = 1.5
    cluster.submit("orders", JID)
    cluster.restart(JID, n=3)
    clock.advance(5.0)
    cluster.jobmanager_restart()
    details = await client.job_details(JID)
    assert details is not None
    assert details.start_time == int((T0 + 5.0) * 1000)
    assert await client.num_restarts(JID) == 3
    clock.advance(1.5)
    assert await client.num_restarts(JID) == 0


async def test_jobmanager_restart_without_ha_loses_every_job(
    cluster: FakeCluster, client: FlinkClient
) -> None:
    cluster.submit("orders", JID)
    cluster.jobmanager_restart(keep_jobs=False)
    assert await client.overview() == []
    assert await client.job_details(JID) is None
    assert await client.num_restarts(JID) is None


async def test_leader_election(cluster: FakeCluster, client: FlinkClient) -> None:
    cluster.submit("orders", JID)
    cluster.election(True)
    calls = [
        client.overview(),
        client.job_details(JID),
        client.num_restarts(JID),
        client.newest_exception(JID),
    ]
    for call in calls:
        error = await flink_failure(call)
        assert (error.kind, error.status) == (FailureKind.HTTP_STATUS, 503)
        assert "ongoing leader election" in error.detail
    cluster.election(False)
    assert len(await client.overview()) == 1


# -- faults -----------------------------------------------------------------------------

FAULT_OUTCOMES = [
    (Fault(FaultKind.HANG), FailureKind.TIMEOUT, None),
    (Fault(FaultKind.HTTP_500), FailureKind.HTTP_STATUS, 500),
    (Fault(FaultKind.HTTP_502), FailureKind.HTTP_STATUS, 502),
    (Fault(FaultKind.HTTP_503), FailureKind.HTTP_STATUS, 503),
    (Fault(FaultKind.HTML), FailureKind.NOT_JSON, None),
    (Fault(FaultKind.HTML, status=502), FailureKind.HTTP_STATUS, 502),
    (Fault(FaultKind.GARBAGE), FailureKind.NOT_JSON, None),
    (Fault(FaultKind.TRUNCATED), FailureKind.NOT_JSON, None),
    (Fault(FaultKind.WRONG_TYPES), FailureKind.BAD_SHAPE, None),
    (Fault(FaultKind.OVERSIZED, size=2 << 20), FailureKind.TOO_LARGE, 200),
    (Fault(FaultKind.RESET), FailureKind.RESET, None),
    (Fault(FaultKind.REDIRECT), FailureKind.REDIRECT, 302),
    (Fault(FaultKind.NESTED), FailureKind.NOT_JSON, None),
]


@pytest.mark.parametrize(
    ("fault", "kind", "status"),
    FAULT_OUTCOMES,
    ids=[f"{fault.kind}-{fault.status}" for fault, _, _ in FAULT_OUTCOMES],
)
@pytest.mark.parametrize(
    "endpoint", [Endpoint.OVERVIEW, Endpoint.DETAILS, Endpoint.METRICS, Endpoint.EXCEPTIONS]
)
async def test_fault_on_one_endpoint(
    cluster: FakeCluster,
    server: FakeFlinkServer,
    session: aiohttp.ClientSession,
    endpoint: Endpoint,
    fault: Fault,
    kind: FailureKind,
    status: int | None,
) -> None:
    cluster.submit("orders", JID)
    cluster.fail(JID, "boom")
    client = FlinkClient(session, server.url, timeout=0.3, max_body_bytes=1 << 20)
    calls: dict[Endpoint, Callable[[], Any]] = {
        Endpoint.OVERVIEW: client.overview,
        Endpoint.DETAILS: lambda: client.job_details(JID),
        Endpoint.METRICS: lambda: client.num_restarts(JID),
        Endpoint.EXCEPTIONS: lambda: client.newest_exception(JID),
    }
    cluster.set_fault(endpoint, fault)
    error = await flink_failure(calls[endpoint]())
    assert (error.kind, error.status) == (kind, status)
    for other, call in calls.items():
        if other is not endpoint:
            await call()  # the other endpoints are healthy
    cluster.clear_fault(endpoint)
    await calls[endpoint]()


async def test_status_endpoint_faults(
    cluster: FakeCluster, server: FakeFlinkServer, session: aiohttp.ClientSession
) -> None:
    cluster.submit("orders", JID)
    assert await fetch(session, f"{server.url}/jobs/{JID}/status") == (200, {"status": "RUNNING"})
    cluster.set_fault(Endpoint.STATUS, FaultKind.WRONG_TYPES)
    assert await fetch(session, f"{server.url}/jobs/{JID}/status") == (200, {"status": 42})


async def test_a_fault_on_every_endpoint(cluster: FakeCluster, client: FlinkClient) -> None:
    cluster.submit("orders", JID)
    cluster.set_fault("*", FaultKind.HTTP_500)
    assert (await flink_failure(client.overview())).status == 500
    assert (await flink_failure(client.num_restarts(JID))).status == 500
    cluster.set_fault(Endpoint.OVERVIEW, FaultKind.GARBAGE)  # the specific fault wins
    assert (await flink_failure(client.overview())).kind is FailureKind.NOT_JSON
    cluster.clear_fault("*")
    cluster.clear_fault(Endpoint.OVERVIEW)
    assert await client.num_restarts(JID) == 0


async def test_slow_answers_arrive(cluster: FakeCluster, client: FlinkClient) -> None:
    cluster.submit("orders", JID)
    cluster.set_fault(Endpoint.OVERVIEW, Fault(FaultKind.SLOW, seconds=0.05))
    assert len(await client.overview()) == 1


async def test_closing_the_server_ends_hanging_requests(
    cluster: FakeCluster, session: aiohttp.ClientSession
) -> None:
    cluster.set_fault("*", FaultKind.HANG)
    server = FakeFlinkServer(cluster)
    await server.start()
    client = FlinkClient(session, server.url, timeout=30.0)
    request = asyncio.create_task(client.overview())
    async with asyncio.timeout(10):
        while cluster.requests() == 0:  # noqa: ASYNC110 - the server counts in its handler
            await asyncio.sleep(0.01)
        await server.close()
        error = await flink_failure(request)
    # aiohttp retries a GET whose connection closed before any answer: that finds no server.
    assert error.kind in {FailureKind.RESET, FailureKind.REFUSED}


# -- counters, threads, the command -----------------------------------------------------


async def test_requests_are_counted_per_endpoint_and_job(
    cluster: FakeCluster, client: FlinkClient
) -> None:
    cluster.submit("a", JID)
    cluster.submit("b", OTHER)
    await client.overview()
    await client.num_restarts(JID)
    await client.num_restarts(JID)
    await client.num_restarts(OTHER)
    await client.job_details(UNKNOWN)
    assert cluster.requests() == 5
    assert cluster.requests(Endpoint.OVERVIEW) == 1
    assert cluster.requests(Endpoint.METRICS) == 3
    assert cluster.requests(Endpoint.METRICS, JID) == 2
    assert cluster.requests(jid=UNKNOWN) == 1
    assert cluster.requests(Endpoint.EXCEPTIONS) == 0


def test_served_from_a_thread() -> None:
    cluster = FakeCluster()
    cluster.submit("orders", JID)
    with serve_in_thread(cluster) as server:
        with urllib.request.urlopen(f"{server.url}/jobs/overview", timeout=10) as response:
            body = json.loads(response.read())
        cluster.finish(JID)  # scripted from this thread while the server runs in its own
        with urllib.request.urlopen(f"{server.url}/jobs/{JID}/status", timeout=10) as response:
            status = json.loads(response.read())
    assert [job["jid"] for job in body["jobs"]] == [JID]
    assert status == {"status": "FINISHED"}
    assert cluster.requests() == 2


def test_command_serves_the_demo_scenario() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "probe.testing", "--port", "0", "--at", "6", "--still"],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[3])},
    )
    try:
        assert process.stdout is not None
        announced = json.loads(process.stdout.readline())
        assert announced["jobs"] == DEMO_JOBS
        with urllib.request.urlopen(f"{announced['url']}/jobs/overview", timeout=10) as response:
            jobs = {job["name"]: job["state"] for job in json.loads(response.read())["jobs"]}
        assert jobs == {
            "orders": "RUNNING",
            "payments": "RUNNING",
            "sessionizer": "RUNNING",
            "nightly-report": "FINISHED",
            "broken-etl": "FAILED",
        }
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
