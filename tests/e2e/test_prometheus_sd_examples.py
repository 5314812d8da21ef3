"""The example Prometheus configurations that send every discovered Flink cluster to
flink-probe's ``/probe``: promtool accepts them, and Prometheus' own relabelling (``promtool
check service-discovery``) turns each discovered Flink REST service into the right scrape.

Debian's promtool is built without Kubernetes service discovery: there, the Kubernetes
example is checked with its ``kubernetes_sd_configs`` replaced by a file holding the labels
Kubernetes discovery gives Flink's services, and every other line as written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from tools import promtool, run

from probe._targets.file_sd import parse_targets

PROMETHEUS = Path(__file__).resolve().parents[2] / "config" / "prometheus"

JOB = "flink-jobs"
DISCOVERY_SECONDS = 2
FLINK_PROBE = {
    "file-sd.yml": "127.0.0.1:9270",
    "kubernetes-sd.yml": "flink-probe.monitoring.svc:9270",
}


def relabelled(config: Path, job: str) -> list[dict[str, str]]:
    """The label sets of the job's targets after relabelling, as Prometheus makes them."""
    # promtool collects what discovery finds for the whole timeout; files are read at once.
    result = run(
        promtool(),
        "check",
        "service-discovery",
        f"--timeout={DISCOVERY_SECONDS}s",
        config.name,
        job,
        cwd=config.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return [target["labels"] for target in json.loads(result.stdout) if target["labels"]]


def scrapes(config: Path) -> list[dict[str, str]]:
    """What flink-probe is asked for: where, and the /probe parameters."""
    return sorted(
        (
            {
                key.removeprefix("__param_"): value
                for key, value in labels.items()
                if key.startswith("__param_") or key in ("__address__", "__metrics_path__")
            }
            | {"other": ",".join(sorted(k for k in labels if not k.startswith("__")))}
            for labels in relabelled(config, JOB)
        ),
        key=lambda scrape: scrape["target"],
    )


def test_promtool_accepts_the_file_sd_example() -> None:
    checked = run(promtool(), "check", "config", "file-sd.yml", cwd=PROMETHEUS)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "WARNING" not in checked.stdout + checked.stderr  # the targets files exist


def test_the_file_sd_example_asks_flink_probe_for_each_listed_cluster() -> None:
    assert scrapes(PROMETHEUS / "file-sd.yml") == [
        {
            "__address__": "127.0.0.1:9270",
            "__metrics_path__": "/probe",
            "target": "http://flink-orders.example.internal:8081/",
            "namespace": "shop",
            "deployment": "orders",
            "other": "instance,job",
        },
        {
            "__address__": "127.0.0.1:9270",
            "__metrics_path__": "/probe",
            "target": "https://flink-billing.example.internal:8443/",
            "namespace": "finance",
            "deployment": "billing",
            "profile": "internal-ca",
            "other": "instance,job",
        },
    ]


def test_flink_probe_reads_the_example_targets_file_as_prometheus_does() -> None:
    text = (PROMETHEUS / "targets" / "flink.yml").read_text(encoding="utf-8")

    targets = parse_targets(text, "yaml")

    assert [(t.url, t.namespace, t.deployment, t.profile) for t in targets] == [
        ("http://flink-orders.example.internal:8081/", "shop", "orders", None),
        ("https://flink-billing.example.internal:8443/", "finance", "billing", "internal-ca"),
    ]


def service(name: str, namespace: str, port: tuple[str, int], **labels: str) -> dict[str, Any]:
    """One port of a Service as Prometheus' Kubernetes discovery (role: service) shows it."""
    port_name, number = port
    meta = {
        "__meta_kubernetes_namespace": namespace,
        "__meta_kubernetes_service_name": name,
        "__meta_kubernetes_service_type": "ClusterIP",
        "__meta_kubernetes_service_port_name": port_name,
        "__meta_kubernetes_service_port_number": str(number),
        "__meta_kubernetes_service_port_protocol": "TCP",
    }
    for key, value in labels.items():
        meta[f"__meta_kubernetes_service_label_{key}"] = value
        meta[f"__meta_kubernetes_service_labelpresent_{key}"] = "true"
    return {"targets": [f"{name}.{namespace}.svc:{number}"], "labels": meta}


NATIVE = {"type": "flink-native-kubernetes"}
DISCOVERED_SERVICES = [
    # Native Kubernetes mode, or the operator's FlinkDeployment "orders" (mode: native).
    service("orders-rest", "shop", ("rest", 8081), app="orders", **NATIVE),
    service("orders", "shop", ("jobmanager-rpc", 6123), app="orders", **NATIVE),
    service("orders", "shop", ("blobserver", 6124), app="orders", **NATIVE),
    # The operator's FlinkDeployment "billing" in mode: standalone.
    service(
        "billing-rest", "finance", ("rest", 8081), app="billing", type="flink-standalone-kubernetes"
    ),
    # Not Flink.
    service("api-rest", "shop", ("rest", 8080), app="api"),
    service("grafana", "ops", ("http", 3000), app="grafana"),
]


def test_the_kubernetes_example_asks_flink_probe_for_each_jobmanager_rest_service(
    tmp_path: Path,
) -> None:
    binary = promtool()
    original = PROMETHEUS / "kubernetes-sd.yml"
    checked = run(binary, "check", "config", original.name, cwd=PROMETHEUS)
    document = yaml.safe_load(original.read_text(encoding="utf-8"))
    [job] = document["scrape_configs"]
    assert job["kubernetes_sd_configs"] == [{"role": "service"}]
    if "field kubernetes_sd_configs not found" not in checked.stdout + checked.stderr:
        assert checked.returncode == 0, checked.stdout + checked.stderr
    # The same job, with what Kubernetes discovery would find in a file.
    (tmp_path / "services.json").write_text(json.dumps(DISCOVERED_SERVICES))
    del job["kubernetes_sd_configs"]
    job["file_sd_configs"] = [{"files": ["services.json"]}]
    rewritten = tmp_path / original.name
    rewritten.write_text(yaml.safe_dump(document))
    assert run(binary, "check", "config", rewritten.name, cwd=tmp_path).returncode == 0

    assert scrapes(rewritten) == [
        {
            "__address__": FLINK_PROBE[original.name],
            "__metrics_path__": "/probe",
            "target": "http://billing-rest.finance.svc:8081/",
            "namespace": "finance",
            "deployment": "billing",
            "other": "instance,job",
        },
        {
            "__address__": FLINK_PROBE[original.name],
            "__metrics_path__": "/probe",
            "target": "http://orders-rest.shop.svc:8081/",
            "namespace": "shop",
            "deployment": "orders",
            "other": "instance,job",
        },
    ]
