"""The commands behind the CLI: run (the daemon), jobs and demo."""
