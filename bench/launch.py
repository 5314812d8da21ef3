"""``python -m bench.launch [--uvloop] run --config FILE``: the daemon's own command line
(``probe.cli.main``, what the ``flink-probe`` script runs), with two things done first.

- Logging is configured (JSON, debug, stderr) before any other ``probe`` module is imported,
  so every daemon version measured with ``--code REV`` logs its ``probe round`` lines alike,
  whenever it binds its loggers; the daemon configures again, identically.
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
