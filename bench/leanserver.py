"""A lean stand-in for nginx when it is not installed: the tier's files, from memory.

``python -m bench.leanserver --root WWW --ports P1,P2,...`` serves ``WWW/t<i>`` on the i-th
port with HTTP/1.1 keep-alive: every answer is precomputed bytes, so a request costs a dict
look-up and one write. With ``--prefixed`` every port serves every ``WWW/<name>`` under the
path ``/<name>/`` (thousands of targets on a few ports). It runs in its own process, pinned to
the tier's core, like nginx.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Final

from .tier import target_name

_JOB_PATH: Final = re.compile(rb"^/jobs/([0-9a-f]{32})(/metrics)?$")
_NOT_FOUND: Final = b'{"errors":["Not found"]}'


def _response(status: bytes, body: bytes) -> bytes:
    head = (
        b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    return head + body


class Site:
    """Every answer of one target, precomputed."""

    def __init__(self, root: Path) -> None:
        self.overview = _response(b"200 OK", (root / "overview.json").read_bytes())
        self.details = {
            path.stem.encode(): _response(b"200 OK", path.read_bytes())
            for path in (root / "details").glob("*.json")
        }
        self.metrics = {
            path.stem.encode(): _response(b"200 OK", path.read_bytes())
            for path in (root / "metrics").glob("*.json")
        }
        self.metrics_unknown = _response(b"200 OK", (root / "metrics-unknown.json").read_bytes())
        self.not_found = _response(b"404 Not Found", _NOT_FOUND)

    def answer(self, target: bytes) -> bytes:
        path = target.split(b"?", 1)[0]
        if path == b"/jobs/overview":
            return self.overview
        match = _JOB_PATH.match(path)
        if match is None:
            return self.not_found
        jid, metrics = match.group(1), match.group(2)
        if metrics:
            return self.metrics.get(jid, self.metrics_unknown)
        return self.details.get(jid, self.not_found)


class Prefixed:
    """Every target's answers, by the first part of the path (``/<name>/jobs/...``)."""

    def __init__(self, root: Path) -> None:
        self.sites = {d.name.encode(): Site(d) for d in root.iterdir() if d.is_dir()}
        self.not_found = _response(b"404 Not Found", _NOT_FOUND)

    def answer(self, target: bytes) -> bytes:
        name, _, rest = target[1:].partition(b"/")
        site = self.sites.get(name)
        return self.not_found if site is None else site.answer(b"/" + rest)


Answer = Callable[[bytes], bytes]


class _Connection(asyncio.Protocol):
    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        answers = []
        # GET requests only (no bodies): a request ends at the blank line.
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            request_line = self.buffer[: self.buffer.find(b"\r\n")]
            self.buffer = self.buffer[end + 4 :]
            parts = request_line.split(b" ")
            answers.append(self.answer(parts[1] if len(parts) == 3 else b""))
        if answers:
            self.transport.write(b"".join(answers))


async def serve(root: Path, ports: list[int], prefixed: bool) -> None:
    loop = asyncio.get_running_loop()
    shared = Prefixed(root).answer if prefixed else None
    servers = []
    for index, port in enumerate(ports):
        answer = shared or Site(root / target_name(index)).answer
        servers.append(
            await loop.create_server(
                functools.partial(_Connection, answer), "127.0.0.1", port, backlog=4096
            )
        )
    await asyncio.gather(*(server.serve_forever() for server in servers))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.leanserver")
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--ports", required=True, help="comma-separated, one per target")
    parser.add_argument("--prefixed", action="store_true", help="targets by path prefix")
    args = parser.parse_args()
    ports = [int(port) for port in args.ports.split(",")]
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.root, ports, args.prefixed))


if __name__ == "__main__":
    main()
