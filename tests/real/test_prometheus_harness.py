"""The Prometheus harness scrapes a target for real, answers queries, and runs promtool."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator

import pytest

from .prometheus import Prometheus, promtool_check_metrics
from .waiting import wait_for

pytestmark = pytest.mark.prometheus

EXPOSITION = (
    "# HELP flinkprobe_harness_answer A constant the harness test serves.\n"
    "# TYPE flinkprobe_harness_answer gauge\n"
    'flinkprobe_harness_answer{kind="test"} 42\n'
)


class _ExpositionHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = EXPOSITION.encode()
        self.send_response(200 if self.path == "/metrics" else 404)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Keep scrapes out of the test output."""


@pytest.fixture
def metrics_target() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ExpositionHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_prometheus_scrapes_the_target_and_answers_queries(
    start_prometheus: Callable[..., Prometheus], metrics_target: str
) -> None:
    prometheus = start_prometheus(metrics_target)

    result = wait_for(
        lambda: prometheus.query("flinkprobe_harness_answer"), 30, "the scraped sample"
    )

    assert [sample["metric"]["kind"] for sample in result] == ["test"]
    assert result[0]["metric"]["job"] == "flink-probe"
    assert result[0]["value"][1] == "42"


@pytest.mark.usefixtures("prometheus_installed")
def test_promtool_accepts_clean_exposition_and_reports_bad_names() -> None:
    assert promtool_check_metrics(EXPOSITION) == ""
    counter_without_total = "# HELP requests Requests.\n# TYPE requests counter\nrequests 1\n"
    assert '"_total" suffix' in promtool_check_metrics(counter_without_total)
