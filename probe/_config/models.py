"""Configuration: a YAML file, overridden by ``FLINK_PROBE_...`` environment variables.

Sources, highest priority first: environment variables, the YAML file, the defaults of the
models below. With no file at all (no ``--config`` and no ``FLINK_PROBE_CONFIG``) the
configuration is the *sidecar default*: one target ``local`` at ``http://127.0.0.1:8081/``
with discovery on. A file that declares no ``targets`` has none: the sidecar target is never
added to a file, so a file means exactly what it says.

Environment variables: ``FLINK_PROBE_<SECTION>__<KEY>`` sets one key of a mapping section
(``FLINK_PROBE_PROBE__INTERVAL=5s``), ``FLINK_PROBE_TARGETS`` / ``FLINK_PROBE_JOBS`` replace
a whole list with a JSON array. Any other variable under the prefix (except
``FLINK_PROBE_CONFIG``, which names the file) is an error, so a typo is never ignored.

Why not pydantic-settings: its environment source reads ``os.environ`` only (the loader
takes the environment as an argument, for tests and for the CLI), silently ignores unknown
variables under the prefix (``FLINK_PROBE_BOGUS=1``), reports a nested typo as a key of the
model (``probe.intervall``) instead of naming the variable, and turns malformed JSON into a
``SettingsError`` without the decoder's position. Working around all four costs more than
the few lines below that read the variables, which also let every error name the variable
that caused it.

Every user mistake becomes one line of :class:`ConfigError.errors` of the form
``key.path: message`` (``targets[1].url: must be an http(s) URL with a host, got 'ftp://x'``).

Secrets (a target's basic-auth password or bearer token) are never written in the file: a
``*_file`` key names a file holding one, a ``*_env`` key an environment variable. They are
read, and TLS files loaded into SSL contexts, while the configuration is validated, so
``check-config`` reports a missing file or variable; a reload (SIGHUP) reads them again. The
values live in private attributes of the models: `dump_effective` shows the file or variable
name only. Relative paths are taken from the working directory (those inside
``server.web_config`` from that file's directory, as in the Prometheus exporter-toolkit).
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import ssl
from collections.abc import Hashable, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from urllib.parse import SplitResult, urlsplit, urlunsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from probe._cogs.secret_files import (
    SecretError,
    TlsError,
    TlsMaterial,
    check_env_name,
    client_ssl_context,
    read_secret_env,
    read_secret_file,
)
from probe._config.webconfig import WebConfigError, WebConfigFile, WebSecurity, parse_web_config
from probe._core.model import canonical_job_id
from probe._flink.client import BasicCredentials, BearerToken

ENV_PREFIX: Final = "FLINK_PROBE_"
CONFIG_FILE_ENV: Final = "FLINK_PROBE_CONFIG"
STATE_DIRECTORY_ENV: Final = "STATE_DIRECTORY"
"""Set by systemd for ``StateDirectory=``; a relative ``state.path`` is resolved inside it."""

REDACTED_HEADER: Final = "<redacted>"
REDACTED_PASSWORD: Final = "***"

SIDECAR_TARGET: Final[Mapping[str, object]] = {
    "name": "local",
    "url": "http://127.0.0.1:8081/",
    "discover": True,
    "namespace": "default",
}

DEFAULT_INTERVAL: Final = 10.0
METRICS_MAX_AGE_MARGIN: Final = 10.0
"""`metrics_max_age` defaults to `probe.interval` plus this: Flink's metric fetcher interval."""


class ConfigError(Exception):
    """The configuration cannot be used; `errors` holds one line per mistake."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


# --- durations and sizes --------------------------------------------------------------------

_SECONDS_PER_UNIT: Final = {"s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(
    r"(?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*(?P<unit>ms|s|m|h)?"
)
_DURATION_HINT: Final = "use e.g. 500ms, 1.5s, 10s, 5m, 1h, or a number of seconds"


def parse_duration(value: object) -> float:
    """Seconds from ``500ms``, ``1.5s``, ``10s``, ``5m``, ``1h`` or a plain number of seconds."""
    if isinstance(value, bool):  # YAML's `yes`/`on` must not become 1 second
        raise ValueError(f"invalid duration {value!r}: {_DURATION_HINT}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith("-"):
            raise ValueError(f"must not be negative, got {value!r}")
        match = _DURATION.fullmatch(text)
        if match is None:
            raise ValueError(f"invalid duration {value!r}: {_DURATION_HINT}")
        number = float(match["number"])
        unit = match["unit"] or "s"
        # Dividing by 1000 is exact where multiplying by 0.001 is not (0.3 * 1000 != 300).
        seconds = number / 1000 if unit == "ms" else number * _SECONDS_PER_UNIT[unit]
    else:
        raise ValueError(f"invalid duration {value!r}: {_DURATION_HINT}")
    if not math.isfinite(seconds):
        raise ValueError(f"invalid duration {value!r}: {_DURATION_HINT}")
    if seconds < 0:
        raise ValueError(f"must not be negative, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """``1h``, ``5m``, ``10s``, ``1.5s`` or ``500ms``: a text that parses back to `seconds`."""
    if seconds == 0:
        return "0s"
    for unit in ("h", "m", "s"):
        count = seconds / _SECONDS_PER_UNIT[unit]
        if count == int(count) and parse_duration(f"{int(count)}{unit}") == seconds:
            return f"{int(count)}{unit}"
    milliseconds = seconds * 1000
    if seconds < 1 and milliseconds == int(milliseconds):
        text = f"{int(milliseconds)}ms"
        if parse_duration(text) == seconds:
            return text
    return f"{seconds!r}s"


_SIZE_UNITS: Final = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
_SIZE = re.compile(r"(?P<number>\d+)\s*(?P<unit>B|KiB|MiB|GiB)?")


def parse_byte_size(value: object) -> int:
    """Bytes from ``4MiB``, ``512KiB``, ``1GiB``, ``100B`` or a plain number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        number, unit = value, "B"
    else:
        match = _SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
        if match is None:
            raise ValueError(f"invalid size {value!r}: use e.g. 4MiB, 512KiB, or a number of bytes")
        number, unit = int(match["number"]), match["unit"] or "B"
    return number * _SIZE_UNITS[unit]


def format_byte_size(size: int) -> str | int:
    for unit in ("GiB", "MiB", "KiB"):
        if size and size % _SIZE_UNITS[unit] == 0:
            return f"{size // _SIZE_UNITS[unit]}{unit}"
    return size


def _positive(seconds: float) -> float:
    if seconds <= 0:
        raise ValueError("must be greater than 0")
    return seconds


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
"""Seconds, >= 0; written back as ``10s`` in JSON/YAML dumps."""
PositiveDuration = Annotated[Duration, AfterValidator(_positive)]
ByteSize = Annotated[
    int,
    BeforeValidator(parse_byte_size),
    PlainSerializer(format_byte_size, return_type=str | int, when_used="json"),
]

# --- models ---------------------------------------------------------------------------------

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


_Loc = tuple[str | int, ...]
"""A key path: ('targets', 1, 'url') is ``targets[1].url``."""
_Problem = tuple[_Loc, str, object]
"""Where, what, and the offending value."""


def _located_error(model: BaseModel | type[BaseModel], problems: list[_Problem]) -> ValidationError:
    """Errors of a model validator at the keys they concern, not at the model itself.

    pydantic keeps the locations of a ValidationError raised inside a validator, relative to
    where that validator runs.
    """
    details = [
        InitErrorDetails(type=PydanticCustomError("config", message), loc=loc, input=value)
        for loc, message, value in problems
    ]
    title = model.__name__ if isinstance(model, type) else type(model).__name__
    return ValidationError.from_exception_data(title, details)


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


def _refuse_inline_secret(model: type[BaseModel], data: object, key: str) -> None:
    if isinstance(data, Mapping) and key in data:
        # The value is not quoted back: it is the secret.
        message = f"secrets are never written in the configuration: use {key}_file or {key}_env"
        raise _located_error(model, [((key,), message, None)])


def _read_secret(model: BaseModel, key: str, info: ValidationInfo, *, required: bool) -> str | None:
    """The secret named by the model's ``<key>_file`` or ``<key>_env``, if either is set."""
    path: Path | None = getattr(model, f"{key}_file")
    variable: str | None = getattr(model, f"{key}_env")
    if path is not None and variable is not None:
        message = f"set one of {key}_file and {key}_env, not both"
        raise _located_error(model, [((f"{key}_env",), message, None)])
    try:
        if path is not None:
            return read_secret_file(path)
        if variable is not None:
            return read_secret_env(variable, _environ(info))
    except SecretError as error:
        where = f"{key}_file" if path is not None else f"{key}_env"
        raise _located_error(model, [((where,), str(error), None)]) from None
    if required:
        message = f"set {key}_file or {key}_env (the {key} is never written in the configuration)"
        raise _located_error(model, [((f"{key}_file",), message, None)])
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
    _web: WebSecurity = PrivateAttr(default_factory=WebSecurity)

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, listen: str) -> str:
        split_listen(listen)
        return listen

    @model_validator(mode="after")
    def _load_web_config(self) -> ServerConfig:
        if self.web_config is not None:
            self._web = _load_web_config(self.web_config, self)
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
    interval: PositiveDuration = DEFAULT_INTERVAL
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
            raise _located_error(self, [(("timeout",), message, self.timeout)])
        return self


class StateConfig(_Section):
    path: Path = Path("flink-probe.db")
    """SQLite file. `load_config` makes a relative path absolute: inside ``$STATE_DIRECTORY``
    when systemd sets it, else in the working directory."""

    @field_validator("path", mode="before")
    @classmethod
    def _non_empty(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            raise ValueError("must not be empty")
        return value


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
            raise _located_error(self, [((missing,), message, None)])
        try:
            self._material = client_ssl_context(
                ca_file=self.ca_file,
                cert_file=self.cert_file,
                key_file=self.key_file,
                insecure_skip_verify=self.insecure_skip_verify,
            )
        except TlsError as error:
            raise _located_error(self, [((error.key,), str(error), None)]) from None
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

    @model_validator(mode="before")
    @classmethod
    def _no_inline_password(cls, data: object) -> object:
        _refuse_inline_secret(cls, data, "password")
        return data

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

    @model_validator(mode="before")
    @classmethod
    def _no_inline_token(cls, data: object) -> object:
        _refuse_inline_secret(cls, data, "bearer_token")
        return data

    @model_validator(mode="after")
    def _check_security(self, info: ValidationInfo) -> TargetConfig:
        if self.tls is not None and not self.url.startswith("https:"):
            message = f"needs an https:// url, got {_redact_url(self.url)!r}"
            raise _located_error(self, [(("tls",), message, None)])
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
            raise _located_error(self, [((), message, None)])
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


class Config(_Section):
    """The whole configuration; build it with `load_config`, which also resolves state.path."""

    server: ServerConfig = Field(default_factory=ServerConfig)
    probe: ProbeConfig = Field(default_factory=ProbeConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    targets: list[TargetConfig] = Field(default_factory=list)
    jobs: list[JobConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _cross_check(self) -> Config:
        problems: list[_Problem] = []
        target_index: dict[str, int] = {}
        for index, target in enumerate(self.targets):
            if target.name in target_index:
                first = target_index[target.name]
                message = f"duplicate target name {target.name!r} (also targets[{first}])"
                problems.append((("targets", index, "name"), message, target.name))
            target_index.setdefault(target.name, index)
        declared = ", ".join(target_index) or "none"
        job_index: dict[str, int] = {}
        for index, job in enumerate(self.jobs):
            if job.target not in target_index:
                message = f"unknown target {job.target!r} (declared: {declared})"
                problems.append((("jobs", index, "target"), message, job.target))
            if job.id in job_index:
                message = f"duplicate job id {job.id!r} (also jobs[{job_index[job.id]}])"
                problems.append((("jobs", index, "id"), message, job.id))
            job_index.setdefault(job.id, index)
        if problems:
            raise _located_error(self, problems)
        metrics_max_age = self.probe.interval + METRICS_MAX_AGE_MARGIN
        resolved = [
            target
            if "metrics_max_age" in target.model_fields_set
            else target.model_copy(update={"metrics_max_age": metrics_max_age})
            for target in self.targets
        ]
        # The model is frozen; this runs once, while it is being built.
        object.__setattr__(self, "targets", resolved)
        return self

    def target(self, name: str) -> TargetConfig:
        """The target called `name`; KeyError if none is."""
        for target in self.targets:
            if target.name == name:
                return target
        raise KeyError(name)


# --- loading --------------------------------------------------------------------------------


def load_config(path: Path | None, environ: Mapping[str, str] | None = None) -> Config:
    """The effective configuration: `path` (or ``$FLINK_PROBE_CONFIG``), then the environment.

    Raises ConfigError with every mistake found, one line each.
    """
    environ = os.environ if environ is None else environ
    if path is None and environ.get(CONFIG_FILE_ENV):
        path = Path(environ[CONFIG_FILE_ENV])
    errors: list[str] = []
    sidecar_default = {"targets": [dict(SIDECAR_TARGET)]}
    data = sidecar_default if path is None else _read_file(path, errors)
    overrides = _apply_environment(data if data is not None else {}, environ, errors)
    config: Config | None = None
    if data is not None:
        try:
            # Secrets named by `*_env` keys are read from `environ` (see _environ).
            config = Config.model_validate(data, context={"environ": environ})
        except ValidationError as error:
            errors.extend(_error_lines(error, overrides))
    if errors or config is None:
        raise ConfigError(errors)
    state_path = _resolve_state_path(config.state.path, environ)
    return config.model_copy(update={"state": StateConfig(path=state_path)})


class _StrictYamlLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice in one mapping (PyYAML keeps the last one,
    so a second ``probe:`` section would silently discard the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults` may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                continue  # refused by SafeLoader itself: "found unhashable key"
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def _read_file(
    path: Path, errors: list[str], where: str | None = None, keys: Iterable[str] = ()
) -> dict[Any, Any] | None:
    """The YAML mapping in `path`, or None with the problems added to `errors`, each starting
    with `where` (``config file PATH``); `keys` are the top-level keys an error names (the
    configuration's sections by default)."""
    where = f"config file {path}" if where is None else where
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        errors.append(f"{where}: not found")
        return None
    except UnicodeDecodeError:
        errors.append(f"{where}: not UTF-8 text")
        return None
    except OSError as error:
        errors.append(f"{where}: cannot read: {error.strerror or error}")
        return None
    try:
        document = yaml.load(text, Loader=_StrictYamlLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        problem = error.problem or error.context or "malformed"
        position = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        errors.append(f"{where}: invalid YAML{position}: {problem}")
        return None
    except yaml.YAMLError as error:
        errors.append(f"{where}: invalid YAML: {' '.join(str(error).split())}")
        return None
    if document is None:
        return {}
    if not isinstance(document, dict):
        errors.append(
            f"{where}: top level must be a mapping of sections"
            f" ({', '.join(keys or Config.model_fields)}), got {_describe(document)}"
        )
        return None
    # `jobs:` with every entry commented out reads as null: the same as leaving it out.
    return {key: value for key, value in document.items() if value is not None}


def _apply_environment(
    data: dict[Any, Any], environ: Mapping[str, str], errors: list[str]
) -> dict[_Loc, str]:
    """Merge ``FLINK_PROBE_...`` variables into `data`; returns which key path each one set."""
    overrides: dict[_Loc, str] = {}
    for variable in sorted(environ):
        if not variable.startswith(ENV_PREFIX) or variable == CONFIG_FILE_ENV:
            continue
        keys = tuple(variable[len(ENV_PREFIX) :].lower().split("__"))
        try:
            value = _override_value(keys, environ[variable])
        except ValueError as error:
            errors.append(f"{variable}: {error}")
            continue
        if len(keys) == 1:
            data[keys[0]] = value
        elif isinstance(section := data.setdefault(keys[0], {}), dict):
            section[keys[1]] = value  # (a section that is not a mapping is the file's error)
        overrides[keys] = variable
    return overrides


def _override_value(keys: tuple[str, ...], text: str) -> object:
    """What a variable naming `keys` sets; ValueError saying why it sets nothing."""
    sections = {
        name: field.annotation
        for name, field in Config.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
    }
    match keys:
        case (section, key) if section in sections and key in sections[section].model_fields:
            return text  # the models parse strings: "5s", "3", "true", "4MiB"
        case (section,) if section in sections:
            example = next(iter(sections[section].model_fields)).upper()
            raise ValueError(f"set one key, e.g. {ENV_PREFIX}{section.upper()}__{example}")
        case (section,) if section in Config.model_fields:
            try:
                items = json.loads(text)
            except json.JSONDecodeError as error:
                raise ValueError(f"invalid JSON: {error}") from None
            if not isinstance(items, list):
                raise ValueError(f"must be a JSON list, got {_describe(items)}")
            return items
    raise ValueError("unknown setting")


def _load_web_config(path: Path, server: ServerConfig) -> WebSecurity:
    """`server.web_config`'s TLS and users; errors as lines at ``server.web_config``."""
    errors: list[str] = []
    document = _read_file(path, errors, str(path), WebConfigFile.model_fields)
    if document is not None:
        try:
            return parse_web_config(document, path.parent)
        except ValidationError as error:
            errors += [f"{path}: {line}" for line in _error_lines(error, {})]
        except WebConfigError as error:
            errors += [f"{path}: {line}" for line in error.errors]
    raise _located_error(server, [(("web_config",), line, None) for line in errors])


def _resolve_state_path(path: Path, environ: Mapping[str, str]) -> Path:
    if path.is_absolute():
        return path
    # systemd joins several StateDirectory= entries with ':'; the first is ours.
    state_directory = environ.get(STATE_DIRECTORY_ENV, "").split(":")[0]
    if state_directory:
        return Path(state_directory) / path
    return Path.cwd() / path


# --- error lines ----------------------------------------------------------------------------


class _Redacted:
    def __repr__(self) -> str:
        return REDACTED_HEADER


_REDACTED_VALUE: Final = _Redacted()
"""Stands for a value an error must not quote."""


def format_loc(loc: Iterable[str | int]) -> str:
    """('targets', 1, 'url') -> ``targets[1].url``."""
    text = ""
    for part in loc:
        if part == "[key]":  # pydantic's mark of a mapping key's error: the key is named
            continue
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def _describe(value: object) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _message(error: Mapping[str, Any]) -> str:
    kind: str = error["type"]
    context: Mapping[str, Any] = error.get("ctx", {})
    got = _describe(error.get("input"))
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind == "value_error":
        return str(context["error"])
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"must be a mapping, got {got}"
    if kind == "list_type":
        return f"must be a list, got {got}"
    if kind == "string_type":
        return f"must be a string, got {got}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"must be a whole number, got {got}"
    if kind in ("bool_type", "bool_parsing"):
        return f"must be true or false, got {got}"
    if kind == "greater_than_equal":
        return f"must be at least {context['ge']}, got {got}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "literal_error":
        return f"must be one of {context['expected']}, got {got}"
    if kind == "config":
        return str(error["msg"])
    return f"{error['msg']}, got {got}"


def _error_lines(error: ValidationError, overrides: Mapping[_Loc, str]) -> list[str]:
    lines = []
    for detail in error.errors():
        loc = tuple(detail["loc"])
        if loc[2:3] == ("headers",):  # targets[i].headers: a header value may be a secret
            detail["input"] = _REDACTED_VALUE
        line = f"{format_loc(loc) or 'config'}: {_message(detail)}"
        source = next(
            (variable for path, variable in overrides.items() if loc[: len(path)] == path), None
        )
        lines.append(f"{line} (from {source})" if source else line)
    return lines


# --- effective configuration ----------------------------------------------------------------


def _redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo = f"{parts.username or ''}:{REDACTED_PASSWORD}"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{host}"))


def redacted_dict(config: Config) -> dict[str, Any]:
    """The configuration as plain data (durations as ``10s``), secrets replaced."""
    data = config.model_dump(mode="json")
    for target in data["targets"]:
        target["url"] = _redact_url(target["url"])
        target["headers"] = dict.fromkeys(target["headers"], REDACTED_HEADER)
    return data


def dump_effective(config: Config) -> str:
    """YAML of `redacted_dict`, in the file's key order; loads back as a config file."""
    return yaml.safe_dump(redacted_dict(config), sort_keys=False, allow_unicode=True)
