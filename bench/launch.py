"""``python -m bench.launch [--uvloop] run --config FILE``: the daemon's own command line
(``probe.cli.main``, what the ``flink-probe`` script runs), with two things done first.

- Logging is configured (JSON, debug, stderr) before any other ``probe`` module is imported:
  the bench reads the daemon's ``probe round`` lines, and before commit 0a3054c the modules
  bound their loggers at import time, before ``probe.cli`` configured logging, so their lines
  went to stdout in structlog's default format. Configuring first makes every version of the
  daemon (``python -m bench --code REV``) log alike; the daemon configures again, identically.
- ``--uvloop`` installs uvloop's event loop policy: an experiment to size a proposal, not a
  mode of the daemon.
"""

from __future__ import annotations

import sys


def main() -> int:
    argv = sys.argv[1:]
    if argv[:1] == ["--uvloop"]:
        import uvloop

        uvloop.install()
        argv = argv[1:]
    from probe._cogs.logs import configure

    configure("debug", "json")
    from probe.cli import main as daemon_main

    return daemon_main(argv)


if __name__ == "__main__":
    sys.exit(main())
