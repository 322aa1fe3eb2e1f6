"""My runs: the jobs and sweeps started in this browser, one opened again as it was, one shared read-only."""
