"""Secrets and TLS material from files and environment variables, read with one-line errors.

Secrets never appear in the configuration file itself: a key names the file or the variable
that holds one, and these helpers read it. Every problem is a `SecretError` whose message is
one line naming the file or variable, never the secret (the caller adds the key path).

TLS contexts are built from files once, when the configuration is loaded, so
``check-config`` finds an unreadable or mismatched certificate before the daemon runs. Each
loader also returns a digest of the bytes it read: two loads of unchanged files compare
equal, so a reload (SIGHUP) restarts only what a rotated certificate or secret concerns.

"""

from __future__ import annotations

import hashlib
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

__all__ = [
    "MAX_SECRET_BYTES",
    "ClientAuth",
    "SecretError",
    "TlsError",
    "TlsMaterial",
    "check_env_name",
    "client_ssl_context",
    "read_secret_env",
    "read_secret_file",
    "server_ssl_context",
]

MAX_SECRET_BYTES: Final = 64 * 1024
"""A password or token is short; a larger file is the wrong file (and is not read whole)."""
_MAX_PEM_BYTES: Final = 1024 * 1024
_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RESERVED_ENV_PREFIX: Final = "FLINK_PROBE_"
_SSL_SOURCE_LOCATION: Final = re.compile(r"\s*\(_ssl\.c:\d+\)$")


class SecretError(ValueError):
    """A secret or TLS file that cannot be used; the message is one line without the secret."""


class TlsError(SecretError):
    """A TLS file that cannot be used, with the key (``ca_file``, ...) that named it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


# --- secrets --------------------------------------------------------------------------------


def read_secret_file(path: Path) -> str:
    """The secret in `path`: its text without surrounding whitespace (a trailing newline
    written by ``echo`` is not part of a password)."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_SECRET_BYTES + 1)
    except OSError as error:
        raise SecretError(f"cannot read {path}: {error.strerror or error}") from None
    if len(data) > MAX_SECRET_BYTES:
        raise SecretError(f"{path} is larger than {MAX_SECRET_BYTES} bytes: not a secret file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretError(f"{path} is not UTF-8 text") from None
    return _checked_secret(text.strip(), str(path))


def check_env_name(name: str) -> str:
    """`name` if it can name an environment variable holding a secret; else ValueError."""
    if _ENV_NAME.fullmatch(name) is None:
        raise ValueError(
            f"must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*), got {name!r}"
        )
    if name.upper().startswith(_RESERVED_ENV_PREFIX):
        # Every FLINK_PROBE_ variable is read as a setting, and an unknown one is an error.
        raise ValueError(
            f"must not start with {_RESERVED_ENV_PREFIX} (that prefix is for settings)"
        )
    return name


def read_secret_env(name: str, environ: Mapping[str, str]) -> str:
    """The secret in the environment variable `name`, without surrounding whitespace."""
    value = environ.get(name)
    if value is None:
        raise SecretError(f"environment variable {name} is not set")
    return _checked_secret(value.strip(), f"environment variable {name}")


def _checked_secret(secret: str, where: str) -> str:
    if not secret:
        raise SecretError(f"{where} is empty")
    if any(character in secret for character in "\r\n\0"):
        # It goes into an HTTP header, where a line break would start another header.
        raise SecretError(f"{where} holds more than one line")
    return secret


# --- TLS ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    """An SSL context and the digest of the files it was built from.

    Equality is the digest's: a reloaded configuration whose files did not change is equal to
    the running one, whatever the (incomparable) context objects.
    """

    digest: str
    context: ssl.SSLContext = field(compare=False, repr=False)


def _digest(parts: list[bytes]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        # Length-prefixed: moving bytes from one file to the next changes the digest.
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def _read_pem(key: str, path: Path) -> bytes:
    try:
        with path.open("rb") as file:
            data = file.read(_MAX_PEM_BYTES + 1)
    except OSError as error:
        raise TlsError(key, f"cannot read {path}: {error.strerror or error}") from None
    if len(data) > _MAX_PEM_BYTES:
        raise TlsError(key, f"{path} is larger than {_MAX_PEM_BYTES} bytes: not a PEM file")
    return data


def _ssl_text(error: ssl.SSLError) -> str:
    return _SSL_SOURCE_LOCATION.sub("", str(error.args[1] if len(error.args) > 1 else error))


def _load_ca(context: ssl.SSLContext, key: str, path: Path, read: list[bytes]) -> None:
    data = _read_pem(key, path)
    read.append(data)
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise TlsError(key, f"{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    try:
        # From the bytes just read and hashed: what is trusted is what the digest covers.
        context.load_verify_locations(cadata=data.decode("ascii", errors="replace"))
    except ssl.SSLError as error:
        raise TlsError(key, f"{path}: {_ssl_text(error)}") from None


def _load_key_pair(
    context: ssl.SSLContext,
    keys: tuple[str, str],
    paths: tuple[Path, Path],
    read: list[bytes],
) -> None:
    (cert_key, key_key), (cert_path, key_path) = keys, paths
    cert = _read_pem(cert_key, cert_path)
    private_key = _read_pem(key_key, key_path)
    read += (cert, private_key)
    if b"-----BEGIN CERTIFICATE-----" not in cert:
        raise TlsError(
            cert_key, f"{cert_path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        )
    if b"PRIVATE KEY-----" not in private_key:
        raise TlsError(key_key, f"{key_path} holds no PEM private key")
    if b"ENCRYPTED" in private_key:
        raise TlsError(key_key, f"{key_path} is encrypted; flink-probe needs an unencrypted key")
    try:
        # The password callback is never needed (encrypted keys are refused above); without
        # one, OpenSSL would prompt on the terminal, which a daemon must never do.
        context.load_cert_chain(cert_path, key_path, password=_no_password)
    except ssl.SSLError as error:
        reason = _ssl_text(error)
        if error.reason == "KEY_VALUES_MISMATCH":
            message = f"{key_path} is not the key of {cert_path} ({reason})"
            raise TlsError(key_key, message) from None
        raise TlsError(cert_key, f"{cert_path} with {key_path}: {reason}") from None
    except OSError as error:  # the file went away between the two reads
        raise TlsError(cert_key, f"cannot read {cert_path}: {error.strerror or error}") from None


def _no_password() -> str:
    raise SecretError("the private key is encrypted; flink-probe needs an unencrypted key")


def client_ssl_context(
    *,
    ca_file: Path | None,
    cert_file: Path | None,
    key_file: Path | None,
    insecure_skip_verify: bool,
) -> TlsMaterial:
    """The context for HTTPS requests to a Flink cluster.

    `ca_file` replaces the system's trusted CAs (a private CA); `cert_file`/`key_file` are a
    client certificate (mutual TLS); `insecure_skip_verify` accepts any server certificate.
    Raises TlsError naming the key of the file at fault.
    """
    read = [b"client"]
    # create_default_context: TLS 1.2 or newer, certificate and host name checked.
    context = ssl.create_default_context(cafile=None) if ca_file is None else _bare_client()
    if ca_file is not None:
        _load_ca(context, "ca_file", ca_file, read)
    if cert_file is not None and key_file is not None:
        _load_key_pair(context, ("cert_file", "key_file"), (cert_file, key_file), read)
    if insecure_skip_verify:
        read.append(b"insecure")
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return TlsMaterial(_digest(read), context)


def _bare_client() -> ssl.SSLContext:
    # A client context that trusts nothing yet: with ca_file, that CA is the only one trusted.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


ClientAuth = Literal["none", "optional", "required"]
_VERIFY_MODES: Final[Mapping[ClientAuth, ssl.VerifyMode]] = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}
_TLS_VERSIONS: Final = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}


def server_ssl_context(
    *,
    cert_file: Path,
    key_file: Path,
    client_ca_file: Path | None,
    client_auth: ClientAuth,
    min_version: Literal["TLS12", "TLS13"],
) -> TlsMaterial:
    """The context of the daemon's own HTTPS server. Raises TlsError naming the key at fault.

    `client_auth` ``optional`` verifies a client certificate when one is sent, ``required``
    refuses a connection without one; both verify against `client_ca_file` only.
    """
    read = [f"server {client_auth} {min_version}".encode()]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _TLS_VERSIONS[min_version]
    _load_key_pair(context, ("cert_file", "key_file"), (cert_file, key_file), read)
    if client_ca_file is not None:
        _load_ca(context, "client_ca_file", client_ca_file, read)
    context.verify_mode = _VERIFY_MODES[client_auth]
    return TlsMaterial(_digest(read), context)
