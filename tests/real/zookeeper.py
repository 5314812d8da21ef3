"""A standalone ZooKeeper server (Debian's `zookeeper` package) for Flink high availability.

Never the system service: our own `zoo.cfg` and `dataDir` in a work folder, a free port on
127.0.0.1, the JVM started in the foreground and stopped by pid. The package puts the server
in `/usr/share/java/zookeeper.jar`, whose manifest Class-Path names its dependencies; the main
class is `org.apache.zookeeper.server.quorum.QuorumPeerMain` (standalone without `server.N`).
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path
from typing import Final, Self

from .loopback import LOOPBACK, free_port
from .processes import ManagedProcess, Service
from .waiting import wait_for

ZOOKEEPER_JAR: Final = Path("/usr/share/java/zookeeper.jar")
# Optional: an SLF4J binding so the server's log is not swallowed (the jar brings only the API).
_SLF4J_BINDING: Final = Path("/usr/share/java/slf4j-simple.jar")
MAIN_CLASS: Final = "org.apache.zookeeper.server.quorum.QuorumPeerMain"
INSTALL_HINT: Final = "apt-get install -y zookeeper"
START_TIMEOUT_S: Final = 60.0
# Flink asks for a 4 s session; ZooKeeper grants between 2 and 20 ticks.
TICK_TIME_MS: Final = 2000


def missing_prerequisite() -> str | None:
    """Why this cannot run here (with the fix), or None when it can."""
    if shutil.which("java") is None:
        return "java is not installed (apt-get install -y openjdk-17-jdk-headless)"
    if not ZOOKEEPER_JAR.is_file():
        return f"ZooKeeper is not installed: {ZOOKEEPER_JAR} is missing ({INSTALL_HINT})"
    return None


class ZooKeeper(Service):
    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port if port is not None else free_port()
        self.process: ManagedProcess | None = None

    @property
    def connect_string(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def start(self, timeout: float = START_TIMEOUT_S) -> Self:
        data_dir = self.workdir / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "zoo.cfg"
        config.write_text(
            "\n".join(
                [
                    f"tickTime={TICK_TIME_MS}",
                    f"dataDir={data_dir}",
                    f"clientPort={self.port}",
                    f"clientPortAddress={LOOPBACK}",
                    "maxClientCnxns=0",
                    # No Jetty admin server on 8080, no background purge.
                    "admin.enableServer=false",
                    "4lw.commands.whitelist=ruok,srvr",
                    "",
                ]
            )
        )
        classpath = [str(ZOOKEEPER_JAR)]
        if _SLF4J_BINDING.is_file():
            classpath.append(str(_SLF4J_BINDING))
        self.process = ManagedProcess(
            "zookeeper",
            [
                "java",
                "-Xmx128m",
                "-XX:+UseSerialGC",
                "-cp",
                ":".join(classpath),
                MAIN_CLASS,
                str(config),
            ],
            log_path=self.workdir / "zookeeper.out",
            cwd=self.workdir,
        )
        wait_for(self._is_ok, timeout, f"ZooKeeper on {self.connect_string} to serve")
        return self

    def _is_ok(self) -> bool:
        if self.process is not None and not self.process.is_running():
            raise AssertionError(
                f"ZooKeeper exited with {self.process.returncode}:\n{self.process.log_tail()}"
            )
        # `ruok` says imok before the server serves; `srvr` reports a Mode only once it does.
        return "Mode: standalone" in self.four_letter_word("srvr")

    def four_letter_word(self, word: str) -> str:
        """Send a whitelisted four-letter command (ruok, srvr) and return the answer."""
        with socket.create_connection((LOOPBACK, self.port), timeout=5) as connection:
            connection.sendall(word.encode())
            connection.shutdown(socket.SHUT_WR)
            chunks = []
            while chunk := connection.recv(4096):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
