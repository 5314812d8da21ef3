"""Benchmark of flink-probe against the floor: ``python -m bench`` (``--quick`` for CI).

A fake Flink tier of static JSON served by nginx (a process of its own, pinned to one core,
so it costs the daemon nothing) answers ``/jobs/overview``, ``/jobs/:jid`` and
``/jobs/:jid/metrics`` for T targets and N RUNNING jobs. The *floor* is a minimal aiohttp
client doing exactly the requests of one probe round; the daemon (``flink-probe run``, pinned
to the other core) is measured in its steady state against it. The store is SQLite, or a private
PostgreSQL server the bench starts (``--store``), shared by replicas (``--replicas``);
``--targets-files`` measures instead start-up and re-reads with thousands of file_sd targets.
Figures only: nothing here asserts on timing. ``docs/benchmarks.md`` explains every figure and
records the runs.
"""
