"""Security: TLS and credentials towards Flink, TLS and basic auth of the daemon's own server,
and no secret in anything the daemon shows (logs, check-config, /metrics, the Job API).

Certificates are made in the test (`tls_helpers`), servers run on loopback ports.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import os
import signal
import ssl
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
import yaml
from aiohttp import web
from daemon_harness import (
    REPO,
    Metrics,
    ProbeClient,
    daemon_config,
    flink_probe_command,
    free_port,
    listen_url,
    run_cli,
    running_daemon,
    static_job,
    wait_for_sync,
    write_config,
)
from tls_helpers import Authority, KeyPair, client_context, server_context

import probe._config.webconfig
from probe._cogs.credentials import BearerToken
from probe._config import TargetConfig, load_config
from probe._flink.client import FailureKind, FlinkClient, FlinkError, OverviewEntry


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative secret and certificate paths are taken from the working directory."""
    monkeypatch.chdir(tmp_path)


# --- certificates ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Authority
    other_ca: Authority
    server: KeyPair
    client: KeyPair
    stranger: KeyPair
    """A client certificate of `other_ca`."""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = Authority.create(directory, "good")
    other_ca = Authority.create(directory, "other")
    return Pki(
        ca=ca,
        other_ca=other_ca,
        server=ca.issue("server", server=True),
        client=ca.issue("client", server=False),
        stranger=other_ca.issue("stranger", server=False),
    )


# --- a Flink-like server --------------------------------------------------------------------


@contextlib.asynccontextmanager
async def flink_like(
    *, ssl_context: ssl.SSLContext | None = None, authorization: str | None = None
) -> AsyncIterator[str]:
    """Serves an empty ``/jobs/overview``; with `authorization`, only to requests carrying
    that Authorization header (others get 401, with the header they sent quoted back in
    Flink's error shape, as a careless proxy might). Yields the base URL."""

    async def overview(request: web.Request) -> web.Response:
        sent = request.headers.get("Authorization")
        if authorization is not None and sent != authorization:
            body = {"errors": [f"not authorized: {sent}"]}
            return web.json_response(body, status=401)
        return web.json_response({"jobs": []})

    app = web.Application()
    app.router.add_get("/jobs/overview", overview)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"{'http' if ssl_context is None else 'https'}://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def load_target(
    tmp_path: Path, target: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> TargetConfig:
    path = tmp_path / "flink-probe.yaml"
    path.write_text(yaml.safe_dump({"targets": [{"name": "t", **target}]}))
    return load_config(path, environ={} if environ is None else environ).targets[0]


async def overview_via(target: TargetConfig) -> list[OverviewEntry]:
    """`GET /jobs/overview` with a client set up from `target` as the daemon sets it up."""
    async with aiohttp.ClientSession() as session:
        client = FlinkClient(
            session,
            target.url,
            timeout=5.0,
            ssl=target.ssl_context,
            server_name=target.server_name,
            auth=target.credentials(),
        )
        return await client.overview()


async def failure_via(target: TargetConfig) -> FlinkError:
    with pytest.raises(FlinkError) as raised:
        await overview_via(target)
    return raised.value


# --- TLS to Flink ---------------------------------------------------------------------------


async def test_mutual_tls_with_the_right_ca_and_client_certificate_succeeds(
    pki: Pki, tmp_path: Path
) -> None:
    async with flink_like(ssl_context=server_context(pki.server, pki.ca.cert)) as url:
        target = load_target(
            tmp_path,
            {
                "url": url,
                "tls": {
                    "ca_file": str(pki.ca.cert),
                    "cert_file": str(pki.client.cert),
                    "key_file": str(pki.client.key),
                },
            },
        )

        assert await overview_via(target) == []


async def test_a_server_certificate_of_another_ca_is_a_tls_failure(
    pki: Pki, tmp_path: Path
) -> None:
    async with flink_like(ssl_context=server_context(pki.server)) as url:
        target = load_target(tmp_path, {"url": url, "tls": {"ca_file": str(pki.other_ca.cert)}})

        failure = await failure_via(target)

    assert failure.kind is FailureKind.TLS
    assert "certificate verify failed: unable to get local issuer" in failure.detail


async def test_without_tls_settings_a_private_ca_is_not_trusted(pki: Pki, tmp_path: Path) -> None:
    async with flink_like(ssl_context=server_context(pki.server)) as url:
        target = load_target(tmp_path, {"url": url})

        assert (await failure_via(target)).kind is FailureKind.TLS


async def test_insecure_skip_verify_accepts_any_certificate(pki: Pki, tmp_path: Path) -> None:
    async with flink_like(ssl_context=server_context(pki.server)) as url:
        target = load_target(tmp_path, {"url": url, "tls": {"insecure_skip_verify": True}})

        assert await overview_via(target) == []


async def test_server_name_is_the_name_the_certificate_is_checked_against(
    pki: Pki, tmp_path: Path
) -> None:
    # The server certificate names 127.0.0.1 and localhost.
    async with flink_like(ssl_context=server_context(pki.server)) as url:
        tls = {"ca_file": str(pki.ca.cert)}
        right = load_target(tmp_path, {"url": url, "tls": {**tls, "server_name": "localhost"}})
        wrong = load_target(tmp_path, {"url": url, "tls": {**tls, "server_name": "flink.test"}})

        assert await overview_via(right) == []
        failure = await failure_via(wrong)

    assert failure.kind is FailureKind.TLS
    assert "flink.test" in failure.detail


@pytest.mark.parametrize("client_cert", ["none", "of another CA"])
async def test_a_server_requiring_a_client_certificate_refuses_a_client_without_a_good_one(
    pki: Pki, tmp_path: Path, client_cert: str
) -> None:
    tls: dict[str, str] = {"ca_file": str(pki.ca.cert)}
    if client_cert != "none":
        tls |= {"cert_file": str(pki.stranger.cert), "key_file": str(pki.stranger.key)}
    async with flink_like(ssl_context=server_context(pki.server, pki.ca.cert)) as url:
        target = load_target(tmp_path, {"url": url, "tls": tls})

        failure = await failure_via(target)

    # TLS 1.3 completes the client's side of the handshake before the server checks the
    # certificate: the refusal then arrives as a closed connection.
    assert failure.kind in (FailureKind.TLS, FailureKind.RESET)


async def test_plain_http_to_a_tls_port_is_a_connection_failure(pki: Pki, tmp_path: Path) -> None:
    async with flink_like(ssl_context=server_context(pki.server)) as url:
        target = load_target(tmp_path, {"url": url.replace("https:", "http:")})

        failure = await failure_via(target)

    assert failure.kind in (FailureKind.RESET, FailureKind.HTTP_STATUS)


# --- credentials to Flink -------------------------------------------------------------------


async def test_basic_auth_with_the_password_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "password").write_text("s3cret-pw\n")  # the newline is not part of it
    async with flink_like(authorization=basic("probe", "s3cret-pw")) as url:
        target = load_target(
            tmp_path,
            {"url": url, "basic_auth": {"username": "probe", "password_file": "password"}},
        )

        assert await overview_via(target) == []


async def test_a_wrong_password_is_an_http_status_failure_401_that_quotes_no_secret(
    tmp_path: Path,
) -> None:
    async with flink_like(authorization=basic("probe", "right")) as url:
        target = load_target(
            tmp_path,
            {"url": url, "basic_auth": {"username": "probe", "password_env": "PW"}},
            environ={"PW": "wrong-password"},
        )

        failure = await failure_via(target)

    assert (failure.kind, failure.status) == (FailureKind.HTTP_STATUS, 401)
    encoded = basic("probe", "wrong-password").split()[1]
    assert "not authorized" in failure.detail
    assert "wrong-password" not in str(failure)
    assert encoded not in str(failure)


async def test_a_bearer_token_from_an_environment_variable(tmp_path: Path) -> None:
    async with flink_like(authorization="Bearer t0ken-from-env") as url:
        good = load_target(
            tmp_path, {"url": url, "bearer_token_env": "TOKEN"}, {"TOKEN": "t0ken-from-env"}
        )
        bad = load_target(
            tmp_path, {"url": url, "bearer_token_env": "TOKEN"}, {"TOKEN": "an-old-t0ken"}
        )

        assert await overview_via(good) == []
        failure = await failure_via(bad)

    assert (failure.kind, failure.status) == (FailureKind.HTTP_STATUS, 401)
    assert "an-old-t0ken" not in str(failure)


async def test_a_bearer_token_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("file-t0ken")
    async with flink_like(authorization="Bearer file-t0ken") as url:
        target = load_target(tmp_path, {"url": url, "bearer_token_file": str(tmp_path / "token")})

        assert await overview_via(target) == []


async def test_tls_and_credentials_together(pki: Pki, tmp_path: Path) -> None:
    (tmp_path / "token").write_text("mtls-and-t0ken")
    context = server_context(pki.server, pki.ca.cert)
    async with flink_like(ssl_context=context, authorization="Bearer mtls-and-t0ken") as url:
        target = load_target(
            tmp_path,
            {
                "url": url,
                "bearer_token_file": str(tmp_path / "token"),
                "tls": {
                    "ca_file": str(pki.ca.cert),
                    "cert_file": str(pki.client.cert),
                    "key_file": str(pki.client.key),
                },
            },
        )

        assert await overview_via(target) == []


def test_a_reload_reads_secret_and_certificate_files_again(pki: Pki, tmp_path: Path) -> None:
    """Unchanged files give an equal target (its probe loop keeps running on reload); a
    rotated secret or certificate gives a different one (the loop restarts with it)."""
    token = tmp_path / "token"
    token.write_text("first")
    ca = tmp_path / "ca.pem"
    ca.write_bytes(pki.ca.cert.read_bytes())
    settings = {
        "url": "https://flink:8443",
        "bearer_token_file": "token",
        "tls": {"ca_file": "ca.pem"},
    }
    first = load_target(tmp_path, settings)

    assert load_target(tmp_path, settings) == first
    token.write_text("second")
    rotated_token = load_target(tmp_path, settings)
    assert rotated_token != first
    assert rotated_token.credentials() == BearerToken("second")
    ca.write_bytes(pki.ca.cert.read_bytes() + pki.other_ca.cert.read_bytes())
    assert load_target(tmp_path, settings) != rotated_token


# --- the daemon's own server: web_config ----------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes


def fetch(
    url: str, *, context: ssl.SSLContext | None = None, authorization: str | None = None
) -> Reply:
    """GET `url` (urllib, synchronously); an HTTP error status is a reply, not an exception."""
    headers = {} if authorization is None else {"Authorization": authorization}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            return Reply(response.status, dict(response.headers.items()), response.read())
    except urllib.error.HTTPError as error:
        with error:
            return Reply(error.code, dict(error.headers.items()), error.read())


def bcrypt_hash(password: str) -> str:
    # Cost 4, the lowest: the tests check behaviour, not bcrypt's strength.
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


def web_config_daemon(tmp_path: Path, web_config: Mapping[str, Any]) -> dict[str, Any]:
    """A daemon configuration without targets whose server uses `web_config` (written to
    ``web.yml`` next to the certificates, so relative paths work as in the toolkit)."""
    path = tmp_path / "web.yml"
    path.write_text(yaml.safe_dump(dict(web_config)))
    config = daemon_config(tmp_path / "state.db", targets=[])
    config["server"]["web_config"] = str(path)
    return config


def copy_pair(pair: KeyPair, directory: Path) -> KeyPair:
    copied = KeyPair(directory / pair.cert.name, directory / pair.key.name)
    copied.cert.write_bytes(pair.cert.read_bytes())
    copied.key.write_bytes(pair.key.read_bytes())
    return copied


PROTECTED_PATHS = ("/metrics", "/api/v1/namespaces/default/jobs", "/")


async def test_basic_auth_guards_metrics_and_the_api_and_leaves_health_checks_open(
    tmp_path: Path,
) -> None:
    config = web_config_daemon(
        tmp_path,
        {"basic_auth_users": {"prometheus": bcrypt_hash("scrape-pw"), "ops": bcrypt_hash("x")}},
    )
    async with running_daemon(config) as daemon:
        base = daemon.client.base_url

        async def get(path: str, authorization: str | None = None) -> Reply:
            return await asyncio.to_thread(fetch, base + path, authorization=authorization)

        for path in PROTECTED_PATHS:
            for authorization in (
                None,
                basic("prometheus", "wrong"),
                basic("nobody", "scrape-pw"),
                "Bearer scrape-pw",
                "Basic not-base64!",
            ):
                reply = await get(path, authorization)
                assert reply.status == 401, (path, authorization, reply)
                assert reply.headers["WWW-Authenticate"].startswith("Basic realm=")
                assert reply.body == b'{"error":{"code":401,"message":"authentication required"}}'
            assert (await get(path, basic("prometheus", "scrape-pw"))).status == 200, path

        # Orchestration probes carry no credentials.
        assert (await get("/healthz")).status == 200
        assert (await get("/readyz")).status in (200, 503)
        # Without credentials, not even whether a path exists is told.
        assert (await get("/nothing-here")).status == 401
        assert (await get("/nothing-here", basic("ops", "x"))).status == 404


async def test_a_successful_password_check_is_remembered_and_a_failed_one_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks: list[bool] = []
    real_check = probe._config.webconfig._bcrypt_matches

    def counting_check(password: bytes, hashed: bytes) -> bool:
        checks.append(real_check(password, hashed))
        return checks[-1]

    monkeypatch.setattr(probe._config.webconfig, "_bcrypt_matches", counting_check)
    config = web_config_daemon(tmp_path, {"basic_auth_users": {"prometheus": bcrypt_hash("pw")}})
    async with running_daemon(config) as daemon:
        url = daemon.client.base_url + "/metrics"
        for _ in range(3):
            reply = await asyncio.to_thread(fetch, url, authorization=basic("prometheus", "pw"))
            assert reply.status == 200
        for _ in range(2):
            reply = await asyncio.to_thread(fetch, url, authorization=basic("prometheus", "pX"))
            assert reply.status == 401

    assert checks == [True, False, False]


async def test_tls_serves_https_and_refuses_plain_http(pki: Pki, tmp_path: Path) -> None:
    copy_pair(pki.server, tmp_path)
    config = web_config_daemon(
        tmp_path, {"tls_server_config": {"cert_file": "server.pem", "key_file": "server.key"}}
    )
    async with running_daemon(config) as daemon:
        port = daemon.daemon.bound_port
        https = f"https://127.0.0.1:{port}/healthz"
        reply = await asyncio.to_thread(fetch, https, context=client_context(pki.ca.cert))
        assert reply.status == 200
        untrusted = client_context(pki.other_ca.cert)
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            await asyncio.to_thread(fetch, https, context=untrusted)
        try:
            plain = await asyncio.to_thread(fetch, f"http://127.0.0.1:{port}/healthz")
        except (OSError, http.client.HTTPException):
            pass  # the connection was closed: refused
        else:
            assert plain.status == 400


@pytest.mark.parametrize(
    ("client_auth_type", "without_certificate_allowed"),
    [("RequireAndVerifyClientCert", False), ("VerifyClientCertIfGiven", True)],
)
async def test_tls_client_certificates_are_checked_against_the_client_ca(
    pki: Pki, tmp_path: Path, client_auth_type: str, without_certificate_allowed: bool
) -> None:
    copy_pair(pki.server, tmp_path)
    config = web_config_daemon(
        tmp_path,
        {
            "tls_server_config": {
                "cert_file": "server.pem",
                "key_file": "server.key",
                "client_ca_file": str(pki.ca.cert),
                "client_auth_type": client_auth_type,
            }
        },
    )
    async with running_daemon(config) as daemon:
        url = f"https://127.0.0.1:{daemon.daemon.bound_port}/metrics"

        def get(pair: KeyPair | None) -> Reply:
            return fetch(url, context=client_context(pki.ca.cert, pair))

        assert (await asyncio.to_thread(get, pki.client)).status == 200
        with pytest.raises((OSError, http.client.HTTPException)):
            await asyncio.to_thread(get, pki.stranger)
        if without_certificate_allowed:
            assert (await asyncio.to_thread(get, None)).status == 200
        else:
            with pytest.raises((OSError, http.client.HTTPException)):
                await asyncio.to_thread(get, None)


async def test_min_version_tls13_refuses_a_tls12_client(pki: Pki, tmp_path: Path) -> None:
    copy_pair(pki.server, tmp_path)
    config = web_config_daemon(
        tmp_path,
        {
            "tls_server_config": {
                "cert_file": "server.pem",
                "key_file": "server.key",
                "min_version": "TLS13",
            }
        },
    )
    async with running_daemon(config) as daemon:
        url = f"https://127.0.0.1:{daemon.daemon.bound_port}/healthz"
        tls12 = client_context(pki.ca.cert)
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2

        assert (
            await asyncio.to_thread(fetch, url, context=client_context(pki.ca.cert))
        ).status == 200
        with pytest.raises(urllib.error.URLError):
            await asyncio.to_thread(fetch, url, context=tls12)


# --- no secret anywhere ---------------------------------------------------------------------

SECRETS = {
    "password": "basic-pw-Zq81k",
    "token": "bearer-tok-Yx72m",
    "header": "header-key-Wv63n",
    "web password": "web-pw-Ut54p",
}


def secret_spellings() -> dict[str, str]:
    """Every secret, plain and as it travels in a basic Authorization header."""
    encoded = {
        "password (encoded)": basic("probe", SECRETS["password"]).split()[1],
        "web password (encoded)": basic("prometheus", SECRETS["web password"]).split()[1],
    }
    return SECRETS | encoded


async def test_no_secret_in_logs_check_config_metrics_or_the_api(
    pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = tmp_path / "password"
    password.write_text(SECRETS["password"])
    monkeypatch.setenv("FLINK_TEST_TOKEN", SECRETS["token"])
    web_config = tmp_path / "web.yml"
    web_config.write_text(
        yaml.safe_dump({"basic_auth_users": {"prometheus": bcrypt_hash(SECRETS["web password"])}})
    )
    scrape = basic("prometheus", SECRETS["web password"])
    job_ids = {
        "tls": "11111111-1111-4111-8111-111111111111",
        "unauthorized": "22222222-2222-4222-8222-222222222222",
        "refused": "33333333-3333-4333-8333-333333333333",
    }
    async with (
        flink_like(ssl_context=server_context(pki.server)) as tls_url,
        # Answers 401 quoting the Authorization header it got: the token comes back to us.
        flink_like(authorization="Bearer the-right-token") as unauthorized_url,
    ):
        config = daemon_config(
            tmp_path / "state.db",
            targets=[
                {
                    "name": "tls",
                    "url": tls_url,
                    "tls": {"ca_file": str(pki.other_ca.cert)},
                    # Absolute: the daemon runs in another working directory.
                    "basic_auth": {"username": "probe", "password_file": str(password)},
                },
                {
                    "name": "unauthorized",
                    "url": unauthorized_url,
                    "bearer_token_env": "FLINK_TEST_TOKEN",
                },
                {
                    "name": "refused",
                    "url": f"http://127.0.0.1:{free_port()}/",
                    "headers": {"X-Api-Key": SECRETS["header"]},
                },
            ],
            jobs=[static_job(job_id, name, name) for name, job_id in job_ids.items()],
        )
        config["server"]["web_config"] = str(web_config)
        config["logging"]["level"] = "debug"
        config_file = write_config(tmp_path / "flink-probe.yaml", config)
        output = tmp_path / "output.txt"
        client = ProbeClient(listen_url(config))
        # Both streams into one file: logs must be clean wherever they are written.
        with output.open("wb") as sink:
            daemon = await asyncio.create_subprocess_exec(
                *flink_probe_command("run", "--config", str(config_file)),
                stdout=sink,
                stderr=asyncio.subprocess.STDOUT,
                cwd=REPO,
                env={k: v for k, v in os.environ.items() if not k.startswith("FLINK_PROBE_")},
            )
        try:

            def metrics_text() -> str:
                assert daemon.returncode is None, output.read_text()
                reply = client.request("/metrics", headers={"Authorization": scrape})
                assert reply.status == 200, reply
                return reply.text

            def all_failed(text: str) -> bool:
                metrics = Metrics.parse(text)
                return all(
                    metrics.total("flink_probe_request_errors_total", target=name, reason=reason)
                    > 0
                    for name, reason in [
                        ("tls", "tls"),
                        ("unauthorized", "http_status"),
                        ("refused", "refused"),
                    ]
                )

            metrics = await asyncio.to_thread(
                wait_for_sync, metrics_text, all_failed, "a failed request to every target", 20.0
            )
            paths = [
                "/api/v1/namespaces/default/jobs",
                *(f"/api/v1/namespaces/default/jobs/{job_id}" for job_id in job_ids.values()),
            ]
            api = [
                (await asyncio.to_thread(client.request, path, headers={"Authorization": scrape}))
                for path in paths
            ]
            check = await asyncio.to_thread(run_cli, "check-config", "--config", str(config_file))
        finally:
            daemon.send_signal(signal.SIGTERM)
            exit_code = await asyncio.wait_for(daemon.wait(), 20)
    logs = output.read_text()

    assert exit_code == 0, logs
    assert [answer.status for answer in api] == [200] * len(paths)
    assert check.returncode == 0, check.stderr
    for failing in ("overview:tls", "overview:http_status", "overview:refused"):
        assert failing in logs  # the failures were logged: the logs had every chance to leak
    shown = {
        "logs": logs,
        "check-config": check.stdout + check.stderr,
        "/metrics": metrics,
        "Job API": "\n".join(answer.text for answer in api),
    }
    leaks = [
        f"{secret_name} in {where}"
        for secret_name, secret in secret_spellings().items()
        for where, text in shown.items()
        if secret in text
    ]
    assert leaks == []
