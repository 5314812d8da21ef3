"""TLS and basic authentication for the daemon's own HTTP server (``server.web_config``).

The file has the format of the Prometheus exporter-toolkit's web configuration, so a file
written for node_exporter works here as long as it uses what flink-probe supports::

    tls_server_config:
      cert_file: server.pem          # PEM certificate (chain) of the server
      key_file: server.key           # its unencrypted PEM key
      client_ca_file: clients.pem    # CA that client certificates must be signed by
      client_auth_type: RequireAndVerifyClientCert
      min_version: TLS12             # TLS12 (default) or TLS13
    basic_auth_users:
      prometheus: $2b$12$...         # bcrypt hash (htpasswd -nBC 12 "" | tr -d ':\\n')

Relative paths are relative to the directory of the web configuration file (as in the
exporter-toolkit). Unknown keys are errors; the toolkit's keys flink-probe does not implement
(``cipher_suites``, ``http_server_config``, ...) are errors that say so, since silently
ignoring a security setting would be worse. ``client_auth_type`` ``RequestClientCert`` and
``RequireAnyClientCert`` accept a client certificate *without verifying it*, which Python's
``ssl`` module cannot do: they are refused, with the verifying alternatives named.

`load_web_config` reads the file into a `WebSecurity`: the server's SSL context and the
basic-auth middleware.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import json
import os
import re
import ssl
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import anyio
import bcrypt
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from probe._cogs.secret_files import ClientAuth, TlsError, TlsMaterial, server_ssl_context
from probe._config.documents import read_mapping
from probe._config.errors import ConfigError, error_lines

__all__ = [
    "WebConfigError",
    "WebSecurity",
    "basic_auth_middleware",
    "load_web_config",
    "parse_web_config",
]

CLIENT_AUTH_TYPES: Final[Mapping[str, ClientAuth | None]] = {
    "NoClientCert": "none",
    "RequestClientCert": None,
    "RequireAnyClientCert": None,
    "VerifyClientCertIfGiven": "optional",
    "RequireAndVerifyClientCert": "required",
}
"""The exporter-toolkit's names; None: a mode flink-probe refuses (no verification)."""

_UNSUPPORTED: Final[Mapping[str, tuple[str, ...]]] = {
    "": ("http_server_config", "rate_limit"),
    "tls_server_config": (
        "cert",
        "key",
        "client_ca",
        "client_allowed_sans",
        "max_version",
        "cipher_suites",
        "prefer_server_cipher_suites",
        "curve_preferences",
    ),
}
"""Keys of the exporter-toolkit format that flink-probe does not implement."""

_BCRYPT_HASH: Final = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
# Checked instead of an unknown user's hash, so that a wrong user name costs as much time as
# a wrong password and the answer's timing does not tell which users exist. (bcrypt of a
# random password, cost 10.)
_DUMMY_HASH: Final = b"$2b$10$8lj/SujTsrgggyfrhbPZluwjEjX6oC4Ph/7tpX7S2uoaidw3LNOoe"
VERIFIED_CACHE_SIZE: Final = 1024
"""Successful checks remembered; when full the cache starts again (bcrypt ignores bytes after
the 72nd, so one password has many spellings and the cache must be bounded)."""
BCRYPT_CONCURRENCY: Final = 2
"""bcrypt checks run at once, in threads: a flood of wrong passwords cannot take every core, nor
the worker threads the store writes run in."""
REALM: Final = 'Basic realm="flink-probe", charset="UTF-8"'


class WebConfigError(Exception):
    """The web configuration cannot be used; `errors` holds one ``key: problem`` per line."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


# --- the file -------------------------------------------------------------------------------


def _user_name(name: str) -> str:
    if not name:
        raise ValueError("a user name must not be empty")
    if ":" in name:
        # Basic credentials are "user:password": a name with a colon could never log in.
        raise ValueError(f"user name {name!r} must not contain ':'")
    return name


def _bcrypt_hash(value: str) -> str:
    # The hash is not echoed: it is as good as a password against an offline attack.
    if _BCRYPT_HASH.fullmatch(value) is None:
        raise ValueError("must be a bcrypt hash ($2b$<cost>$<53 characters>, see htpasswd -B)")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsServerConfig(_Strict):
    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None
    client_auth_type: Literal[
        "NoClientCert",
        "RequestClientCert",
        "RequireAnyClientCert",
        "VerifyClientCertIfGiven",
        "RequireAndVerifyClientCert",
    ] = "NoClientCert"
    min_version: Literal["TLS12", "TLS13"] = "TLS12"


class WebConfigFile(_Strict):
    tls_server_config: TlsServerConfig | None = None
    basic_auth_users: dict[
        Annotated[str, AfterValidator(_user_name)], Annotated[str, AfterValidator(_bcrypt_hash)]
    ] = Field(default_factory=dict)


def load_web_config(path: Path) -> WebSecurity:
    """The `WebSecurity` the file at `path` asks for.

    Raises WebConfigError with one line per problem, each starting with `path`.
    """
    try:
        return parse_web_config(
            read_mapping(path, str(path), WebConfigFile.model_fields), path.parent
        )
    except ConfigError as error:
        raise WebConfigError(error.errors) from None
    except ValidationError as error:
        raise WebConfigError([f"{path}: {line}" for line in error_lines(error)]) from None
    except WebConfigError as error:
        raise WebConfigError([f"{path}: {line}" for line in error.errors]) from None


def parse_web_config(document: Mapping[str, Any], base_dir: Path) -> WebSecurity:
    """The `WebSecurity` the file's data asks for; relative paths are taken from `base_dir`.

    Raises pydantic's ValidationError for a value of the wrong type or an unknown key, and
    WebConfigError for everything else (unsupported keys, unusable TLS files).
    """
    unsupported = _unsupported_keys(document)
    if unsupported:
        raise WebConfigError(unsupported)
    parsed = WebConfigFile.model_validate(document)
    tls = None
    if parsed.tls_server_config is not None:
        tls = _server_tls(parsed.tls_server_config, base_dir)
    users = {user: hashed.encode() for user, hashed in parsed.basic_auth_users.items()}
    return WebSecurity(tls=tls, users=users)


def _unsupported_keys(document: Mapping[str, Any]) -> list[str]:
    lines = []
    for section, keys in _UNSUPPORTED.items():
        mapping = document.get(section) if section else document
        if not isinstance(mapping, Mapping):
            continue
        for key in keys:
            if key in mapping:
                where = f"{section}.{key}" if section else key
                lines.append(f"{where}: not supported by flink-probe")
    return lines


def _server_tls(config: TlsServerConfig, base_dir: Path) -> TlsMaterial:
    where = "tls_server_config"
    client_auth = CLIENT_AUTH_TYPES[config.client_auth_type]
    if client_auth is None:
        raise WebConfigError(
            [
                f"{where}.client_auth_type: {config.client_auth_type} accepts a client"
                " certificate without verifying it, which flink-probe cannot do; use"
                " VerifyClientCertIfGiven or RequireAndVerifyClientCert with client_ca_file"
            ]
        )
    if config.client_ca_file is not None and client_auth == "none":
        raise WebConfigError(
            [
                f"{where}.client_ca_file: is set, but client_auth_type is NoClientCert; set"
                " client_auth_type to VerifyClientCertIfGiven or RequireAndVerifyClientCert"
            ]
        )
    if config.client_ca_file is None and client_auth != "none":
        raise WebConfigError(
            [
                f"{where}.client_ca_file: required by client_auth_type"
                f" {config.client_auth_type} (the CA client certificates are checked against)"
            ]
        )
    try:
        return server_ssl_context(
            cert_file=base_dir / config.cert_file,
            key_file=base_dir / config.key_file,
            client_ca_file=None
            if config.client_ca_file is None
            else base_dir / config.client_ca_file,
            client_auth=client_auth,
            min_version=config.min_version,
        )
    except TlsError as error:
        raise WebConfigError([f"{where}.{error.key}: {error}"]) from None


@dataclass(frozen=True, slots=True)
class WebSecurity:
    """What ``server.web_config`` asks of the HTTP server; the default asks nothing.

    Equal for equal files (the TLS material compares by the digest of its files), so a reload
    can tell whether the web configuration changed.
    """

    tls: TlsMaterial | None = None
    users: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    """User name -> bcrypt hash; empty: no authentication."""

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        return None if self.tls is None else self.tls.context

    @property
    def scheme(self) -> Literal["http", "https"]:
        return "http" if self.tls is None else "https"

    def middlewares(self, open_paths: Collection[str]) -> list[Middleware]:
        """The middlewares the server's application runs first (none without users).

        Call it inside the event loop that serves the application.
        """
        return [basic_auth_middleware(self.users, open_paths)] if self.users else []


# --- basic authentication -------------------------------------------------------------------


def basic_auth_middleware(users: Mapping[str, bytes], open_paths: Collection[str]) -> Middleware:
    """Answers 401 (``WWW-Authenticate: Basic``) to a request for any path but `open_paths`
    that lacks the user name and password of one of `users` (name -> bcrypt hash)."""
    open_paths = frozenset(open_paths)
    # bcrypt is slow on purpose: checking it on every scrape would cost a core that much per
    # request. A successful (user, password, hash) is therefore remembered, as an HMAC under a
    # key that lives only in this process, so the cache holds nothing that would speed up
    # guessing the password if it leaked.
    cache_key = os.urandom(32)
    verified: set[bytes] = set()
    limiter: list[anyio.CapacityLimiter] = []  # made on first use, inside the event loop

    async def authenticated(header: str | None) -> bool:
        credentials = _basic_credentials(header)
        if credentials is None:
            return False
        user, password = credentials
        stored = users.get(user.decode("utf-8"))
        key = hmac.digest(cache_key, b"\0".join((user, password, stored or b"")), hashlib.sha256)
        if stored is not None and key in verified:
            return True
        if not limiter:
            limiter.append(anyio.CapacityLimiter(BCRYPT_CONCURRENCY))
        matches = await anyio.to_thread.run_sync(
            _bcrypt_matches, password, stored or _DUMMY_HASH, limiter=limiter[0]
        )
        if not (matches and stored is not None):
            return False
        if len(verified) >= VERIFIED_CACHE_SIZE:
            verified.clear()
        verified.add(key)
        return True

    @web.middleware
    async def require_basic_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in open_paths:
            return await handler(request)
        if await authenticated(request.headers.get("Authorization")):
            return await handler(request)
        return _unauthorized()

    return require_basic_auth


def _basic_credentials(header: str | None) -> tuple[bytes, bytes] | None:
    """(user, password) as UTF-8 bytes from ``Basic <base64>``, or None if it is not that."""
    if header is None:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = binascii.a2b_base64(encoded.strip(), strict_mode=True)
        decoded.decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    return (user, password) if colon else None


def _bcrypt_matches(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:  # bcrypt 5 refuses passwords over 72 bytes
        return False


def _unauthorized() -> web.Response:
    body = {"error": {"code": 401, "message": "authentication required"}}
    return web.Response(
        status=401,
        text=json.dumps(body, separators=(",", ":")),
        content_type="application/json",
        headers={"WWW-Authenticate": REALM},
    )
