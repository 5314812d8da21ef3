"""Loopback networking for the harness: free ports and HTTP that never goes through a proxy."""

from __future__ import annotations

import socket
import urllib.request
from http.client import HTTPResponse
from typing import Final

LOOPBACK: Final = "127.0.0.1"

# Servers under test are on 127.0.0.1: an http_proxy in the environment must not be used.
_direct_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


def urlopen(request: urllib.request.Request | str, timeout: float) -> HTTPResponse:
    """`urllib.request.urlopen` without proxies; raises HTTPError for a 4xx/5xx status."""
    response: HTTPResponse = _direct_opener.open(request, timeout=timeout)
    return response
