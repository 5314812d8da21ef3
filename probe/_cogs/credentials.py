"""Credentials sent in an HTTP ``Authorization`` header: basic (user and password) or bearer."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

__all__ = ["BasicCredentials", "BearerToken"]


@dataclass(frozen=True, slots=True)
class BasicCredentials:
    """A user name and password sent as ``Authorization: Basic ...`` (UTF-8, RFC 7617).

    Not aiohttp's BasicAuth: deprecated in aiohttp 3.14, and its repr shows the password.
    """

    username: str
    password: str = field(repr=False)

    def __post_init__(self) -> None:
        if ":" in self.username:
            raise ValueError("a basic-auth user name cannot contain ':'")

    def header_value(self) -> str:
        encoded = base64.b64encode(f"{self.username}:{self.password}".encode()).decode("ascii")
        return f"Basic {encoded}"


@dataclass(frozen=True, slots=True)
class BearerToken:
    """A token sent as ``Authorization: Bearer <token>`` (its repr hides it)."""

    token: str = field(repr=False)

    def header_value(self) -> str:
        return f"Bearer {self.token}"
