"""The configuration's sections: pydantic models that check every key and read its secrets."""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Final, Literal
from urllib.parse import SplitResult, urlsplit, urlunsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from probe._cogs.credentials import BasicCredentials, BearerToken
from probe._cogs.secret_files import (
    SecretError,
    TlsError,
    TlsMaterial,
    check_env_name,
    client_ssl_context,
    read_secret_env,
    read_secret_file,
)
from probe._config.errors import Problem, located_error
from probe._config.redaction import redact_url
from probe._config.units import (
    ByteSize,
    Duration,
    PositiveDuration,
    Seconds,
    duration_bounds,
    format_duration,
)
from probe._config.webconfig import WebConfigError, WebSecurity, load_web_config
from probe._core.model import canonical_job_id
from probe._core.restarts import DEFAULT_MAX_CLOCK_SKEW

DEFAULT_INTERVAL: Final = 10.0
MIN_INTERVAL: Final = 0.1
"""Flink caches its REST answers for longer, so a shorter interval only adds load; near 0 the
scheduler's arithmetic (it divides by the interval) overflows."""
METRICS_MAX_AGE_MARGIN: Final = 10.0
"""`metrics_max_age` defaults to `probe.interval` plus this: Flink's metric fetcher interval."""

_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def _name(value: object) -> object:
    """Target names and namespaces end up in URLs and metric labels: a safe character set."""
    if isinstance(value, str) and _NAME.fullmatch(value) is None:
        if not value:
            raise ValueError("must not be empty")
        raise ValueError(f"must match [A-Za-z0-9_.-]+, got {value!r}")
    return value


Name = Annotated[str, BeforeValidator(_name)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    inline_secret: ClassVar[str | None] = None
    """A key of the section that never holds a value: ``<key>_file`` or ``<key>_env`` names it."""

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secret(cls, data: object) -> object:
        key = cls.inline_secret
        if key is not None and isinstance(data, Mapping) and key in data:
            # The value is not quoted back: it is the secret.
            message = f"secrets are never written in the configuration: use {key}_file or {key}_env"
            raise located_error(cls, [((key,), message, None)])
        return data


def _non_empty_path(value: object) -> object:
    if isinstance(value, str) and not value.strip():
        raise ValueError("must not be empty")
    return value


FilePath = Annotated[Path, BeforeValidator(_non_empty_path)]
EnvName = Annotated[str, AfterValidator(check_env_name)]


def _environ(info: ValidationInfo) -> Mapping[str, str]:
    """The environment `load_config` validates against (the process's without one)."""
    context = info.context if isinstance(info.context, Mapping) else {}
    environ: Mapping[str, str] = context.get("environ", os.environ)
    return environ


def _read_secret(model: BaseModel, key: str, info: ValidationInfo, *, required: bool) -> str | None:
    """The secret named by the model's ``<key>_file`` or ``<key>_env``, if either is set.

    Read while validating, so ``check-config`` reports a missing one and a reload reads it
    again; models keep it in a private attribute, which dumps leave out.
    """
    path: Path | None = getattr(model, f"{key}_file")
    variable: str | None = getattr(model, f"{key}_env")
    if path is not None and variable is not None:
        message = f"set one of {key}_file and {key}_env, not both"
        raise located_error(model, [((f"{key}_env",), message, None)])
    try:
        if path is not None:
            return read_secret_file(path)
        if variable is not None:
            return read_secret_env(variable, _environ(info))
    except SecretError as error:
        where = f"{key}_file" if path is not None else f"{key}_env"
        raise located_error(model, [((where,), str(error), None)]) from None
    if required:
        message = f"set {key}_file or {key}_env (the {key} is never written in the configuration)"
        raise located_error(model, [((f"{key}_file",), message, None)])
    return None


def split_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (IPv6 as ``[::1]:9270``) into host (without brackets) and port."""
    host, separator, port_text = listen.rpartition(":")
    if not separator or not host or not (port_text.isascii() and port_text.isdigit()):
        raise ValueError(f"must be host:port (IPv6 as [::1]:9270), got {listen!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:  # 0: any free port (the log line "listening" names it)
        raise ValueError(f"port must be 0..65535, got {port}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} in brackets is not an IPv6 address") from None
    elif ":" in host or "[" in host or "]" in host:
        raise ValueError(f"write an IPv6 address in brackets, e.g. [::1]:9270, got {listen!r}")
    elif any(character.isspace() for character in host):
        raise ValueError(f"must be host:port (IPv6 as [::1]:9270), got {listen!r}")
    return host, port


class ServerConfig(_Section):
    listen: str = "0.0.0.0:9270"
    """``0.0.0.0``: a sidecar is scraped from outside its pod; bind 127.0.0.1 to keep it local."""
    web_config: FilePath | None = None
    """A Prometheus exporter-toolkit web configuration file: TLS (``tls_server_config``) and
    basic authentication (``basic_auth_users``) for /metrics, /api and / (``/healthz`` and
    ``/readyz`` stay open). Read at start-up: a change needs a restart."""
    max_watches: int = Field(default=100, ge=1)
    """Watches (``?watch=true``) open at once; one more is answered 429."""
    _web: WebSecurity = PrivateAttr(default_factory=WebSecurity)

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, listen: str) -> str:
        split_listen(listen)
        return listen

    @model_validator(mode="after")
    def _load_web_config(self) -> ServerConfig:
        if self.web_config is not None:
            try:
                self._web = load_web_config(self.web_config)
            except WebConfigError as error:
                problems: list[Problem] = [(("web_config",), line, None) for line in error.errors]
                raise located_error(self, problems) from None
        return self

    @property
    def web_security(self) -> WebSecurity:
        """TLS and authentication of the HTTP server (none without `web_config`)."""
        return self._web

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]


class ProbeConfig(_Section):
    interval: Annotated[Seconds, duration_bounds(MIN_INTERVAL)] = DEFAULT_INTERVAL
    timeout: PositiveDuration = 5.0
    not_found_grace: int = Field(default=3, ge=1)
    """Probes in a row that must find a seen job gone before it is FAILED (FlinkJobNotFound)."""
    start_timeout: PositiveDuration = 600.0
    concurrency: int = Field(default=64, ge=1)
    """Requests in flight over all targets."""
    per_target_concurrency: int = Field(default=8, ge=1)
    max_body_bytes: ByteSize = Field(default=4 << 20, ge=1)
    """Larger Flink responses are refused (and the probe counts as UNKNOWN)."""
    metrics_retention: PositiveDuration = 3600.0
    """How long the metrics of a final Job are still exported."""
    metrics_refresh: Duration = 60.0
    """The longest a Job's numRestarts goes unread while its overview entry shows no change
    (state, start-time, last-modification); 0 reads every Job every round."""

    @model_validator(mode="after")
    def _timeout_within_interval(self) -> ProbeConfig:
        # An after-validator of the model: a field validator would skip the default timeout.
        if self.timeout > self.interval:
            message = (
                "must not exceed probe.interval"
                f" ({format_duration(self.timeout)} > {format_duration(self.interval)})"
            )
            raise located_error(self, [(("timeout",), message, self.timeout)])
        return self


DEFAULT_STATE_PATH: Final = Path("flink-probe.db")
SQLITE_SCHEME: Final = "sqlite"
POSTGRESQL_SCHEMES: Final = ("postgresql", "postgres")


def _check_state_url(url: str) -> str:
    """A ``sqlite:///path`` or a ``postgresql://`` URL without a password in it."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == SQLITE_SCHEME:
        if parts.netloc or not parts.path.startswith("/") or parts.path == "/":
            raise ValueError(f"write a SQLite file as sqlite:///absolute/path, got {url!r}")
        return url
    if scheme not in POSTGRESQL_SCHEMES:
        raise ValueError(
            f"must be sqlite:///path or postgresql://user@host:port/dbname, got {redact_url(url)!r}"
        )
    query_keys = {item.partition("=")[0].strip().lower() for item in parts.query.split("&")}
    if parts.password is not None or "password" in query_keys:
        # The URL is not quoted back: it holds the secret.
        raise ValueError(
            "put the password in state.password_file or state.password_env, not in the URL"
        )
    return url


class StateConfig(_Section):
    """Where the Jobs are stored: a SQLite file (one daemon) or PostgreSQL (replicas, sidecars)."""

    path: FilePath | None = None
    """SQLite file (default ``flink-probe.db`` unless `url` is set). `load_config` makes a
    relative path absolute: inside ``$STATE_DIRECTORY`` when systemd sets it, else in the
    working directory."""
    url: Annotated[str, AfterValidator(_check_state_url)] | None = None
    """``sqlite:///path``, or ``postgresql://user@host:port/dbname`` (TLS by the URL's
    ``sslmode``/``sslrootcert``): the store shared by replicas and sidecars."""
    password_file: FilePath | None = None
    """A file holding the PostgreSQL password (else libpq's ``PGPASSFILE``)."""
    password_env: EnvName | None = None
    """An environment variable holding the PostgreSQL password."""
    instance: Name | None = None
    """This daemon's name in leases and logs; None: host name and process id."""
    lease_ttl: PositiveDuration | None = None
    """How long a claimed lease lasts; `Config` sets it to 3 x ``probe.interval`` when omitted,
    and it must be at least 2 intervals."""
    max_clock_skew: Duration = DEFAULT_MAX_CLOCK_SKEW
    """How far the clocks of the daemons sharing a store may be apart: a takeover widens the
    restart rule's windows by it, and a lease is given up this much before it expires."""
    _password: str | None = PrivateAttr(default=None)

    inline_secret = "password"

    @model_validator(mode="after")
    def _check_location(self, info: ValidationInfo) -> StateConfig:
        if self.path is not None and self.url is not None:
            message = "set one of path and url, not both"
            raise located_error(self, [(("url",), message, None)])
        if self.path is None and self.url is None:
            object.__setattr__(self, "path", DEFAULT_STATE_PATH)  # frozen; still being built
        if not self.shared:
            for key in ("password_file", "password_env"):
                if getattr(self, key) is not None:
                    message = "only a postgresql:// url takes a password (SQLite has none)"
                    raise located_error(self, [((key,), message, None)])
        self._password = _read_secret(self, "password", info, required=False)
        return self

    @property
    def shared(self) -> bool:
        """Whether the store is PostgreSQL, shared with other daemons (SQLite has one owner)."""
        return self.url is not None and urlsplit(self.url).scheme.lower() in POSTGRESQL_SCHEMES

    @property
    def location(self) -> Path | str:
        """What `open_store` opens: the SQLite path, or the URL."""
        location = self.url if self.url is not None else self.path
        assert location is not None, "set by validation"
        return location

    @property
    def password(self) -> str | None:
        """The PostgreSQL password from `password_file` or `password_env`, if either is set."""
        return self._password


class EventsConfig(_Section):
    retention: PositiveDuration = 30 * 86400.0
    """Events older than this are dropped."""
    max_per_job: int = Field(default=1000, ge=1)
    """A Job keeps at most this many events, the newest."""


class LoggingConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console", "auto"] = "json"
    """``auto``: console when stderr is a TTY, json otherwise."""

    @field_validator("level", "format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value


def _normalise_url(url: str) -> str:
    parts = urlsplit(url.strip())
    try:
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError:
        parts = SplitResult("", "", "", "", "")
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http(s) URL with a host, got {url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"must not have a query or fragment, got {url!r}")
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    return urlunsplit((parts.scheme.lower(), parts.netloc, path, "", ""))


def _off(value: object) -> object:
    """``off`` (YAML reads a bare ``off`` as false) turns a bound off: None."""
    off = value is False or (isinstance(value, str) and value.strip().lower() == "off")
    return None if off else value


class TlsConfig(_Section):
    """HTTPS to a target: a private CA, a client certificate (mutual TLS), a host name.

    The files are loaded into one SSL context when the configuration is validated (and again
    on reload): an unreadable or mismatched file is a configuration error.
    """

    ca_file: FilePath | None = None
    """PEM CA certificate(s) to trust instead of the system's."""
    cert_file: FilePath | None = None
    """PEM client certificate (chain), sent when the server asks (mutual TLS)."""
    key_file: FilePath | None = None
    """Unencrypted PEM key of `cert_file`; set with it."""
    insecure_skip_verify: bool = False
    """Accept any server certificate (no CA or host name check): for tests only."""
    server_name: str | None = Field(default=None, min_length=1)
    """Host name to verify the certificate against and send as SNI (default: the URL's)."""
    _material: TlsMaterial | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _load(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            missing = "key_file" if self.key_file is None else "cert_file"
            message = "required with " + ("cert_file" if missing == "key_file" else "key_file")
            raise located_error(self, [((missing,), message, None)])
        try:
            self._material = client_ssl_context(
                ca_file=self.ca_file,
                cert_file=self.cert_file,
                key_file=self.key_file,
                insecure_skip_verify=self.insecure_skip_verify,
            )
        except TlsError as error:
            raise located_error(self, [((error.key,), str(error), None)]) from None
        return self

    @property
    def ssl_context(self) -> ssl.SSLContext:
        assert self._material is not None, "set by validation"
        return self._material.context


class BasicAuthConfig(_Section):
    """HTTP basic authentication to a target; the password comes from a file or a variable."""

    username: str = Field(min_length=1)
    password_file: FilePath | None = None
    """A file holding the password (surrounding whitespace is ignored)."""
    password_env: EnvName | None = None
    """An environment variable holding the password."""
    _password: str = PrivateAttr(default="")

    inline_secret = "password"

    @field_validator("username")
    @classmethod
    def _no_colon(cls, username: str) -> str:
        if ":" in username:
            raise ValueError("must not contain ':' (basic credentials are user:password)")
        return username

    @model_validator(mode="after")
    def _read_password(self, info: ValidationInfo) -> BasicAuthConfig:
        self._password = _read_secret(self, "password", info, required=True) or ""
        return self

    def credentials(self) -> BasicCredentials:
        return BasicCredentials(self.username, self._password)


class TargetConfig(_Section):
    """One Flink cluster (its REST endpoint, served by the leading JobManager).

    Credentials: at most one of `basic_auth`, ``bearer_token_file``/``bearer_token_env``, an
    ``Authorization`` header, or a user in the URL.
    """

    name: Name
    url: Annotated[str, AfterValidator(_normalise_url)]
    """Base URL of the REST API, may carry a path prefix; always ends with ``/``."""
    discover: bool = False
    """Create a Job for every Flink job the cluster's overview shows."""
    namespace: Name = "default"
    """Namespace of the Jobs discovery creates."""
    overview_max_age: Duration = 3.0
    """Upper bound on the age of ``/jobs/overview`` (Flink's ``web.refresh-interval``)."""
    metrics_max_age: Duration = DEFAULT_INTERVAL + METRICS_MAX_AGE_MARGIN
    """Upper bound on the age of ``numRestarts``; when omitted, `Config` sets it to
    ``probe.interval`` + 10 s (Flink's ``metrics.fetcher.update-interval``)."""
    max_clock_skew: Annotated[Duration | None, BeforeValidator(_off)] = DEFAULT_MAX_CLOCK_SKEW
    """Bound K on the skew of the JobManagers' clocks to the daemon's; ``off`` (None) turns off
    the restart rule's successor step, which trusts a new epoch's start-time against it."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Sent with every request (e.g. Authorization); redacted in `dump_effective`."""
    tls: TlsConfig | None = None
    """HTTPS settings (an https URL only); without it, the system's CAs are trusted."""
    basic_auth: BasicAuthConfig | None = None
    bearer_token_file: FilePath | None = None
    """A file holding a token sent as ``Authorization: Bearer <token>``."""
    bearer_token_env: EnvName | None = None
    """An environment variable holding that token."""
    _bearer_token: str | None = PrivateAttr(default=None)

    inline_secret = "bearer_token"

    @model_validator(mode="after")
    def _check_security(self, info: ValidationInfo) -> TargetConfig:
        if self.tls is not None and not self.url.startswith("https:"):
            message = f"needs an https:// url, got {redact_url(self.url)!r}"
            raise located_error(self, [(("tls",), message, None)])
        self._bearer_token = _read_secret(self, "bearer_token", info, required=False)
        sources = [
            name
            for name, present in (
                ("basic_auth", self.basic_auth is not None),
                ("bearer_token_file/_env", self._bearer_token is not None),
                (
                    "an Authorization header",
                    any(h.lower() == "authorization" for h in self.headers),
                ),
                ("a user in the url", urlsplit(self.url).username is not None),
            )
            if present
        ]
        if len(sources) > 1:
            message = f"set one kind of credentials, not {' and '.join(sources)}"
            raise located_error(self, [((), message, None)])
        return self

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The target's SSL context, or None for aiohttp's default (the system's CAs)."""
        return None if self.tls is None else self.tls.ssl_context

    @property
    def server_name(self) -> str | None:
        return None if self.tls is None else self.tls.server_name

    def credentials(self) -> BasicCredentials | BearerToken | None:
        """What the Flink client authenticates with (headers and URL users aside)."""
        if self.basic_auth is not None:
            return self.basic_auth.credentials()
        if self._bearer_token is not None:
            return BearerToken(self._bearer_token)
        return None


class JobConfig(_Section):
    """A Job declared in the file (a static source)."""

    id: Annotated[str, AfterValidator(canonical_job_id)]
    target: str
    deployment: str = Field(min_length=1)
    namespace: Name = "default"
    spec: dict[str, Any] = Field(default_factory=dict)
