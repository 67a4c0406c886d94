"""Running our own adapters in tests: in-process (fast, inspectable) or as a real subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from common.auth import AuthConfig, AuthKind
from common.dicomweb.address import parse_dicomweb_address
from common.retry import RetryPolicy
from import_adapter.app import ImportAdapter
from import_adapter.config import DimseServerConfig, ImportConfig
from tests.support.ports import free_port, wait_for_port

IMPORT_AET = "IMPORTADAPTER"


def import_config(dicomweb_url: str, **overrides: Any) -> ImportConfig:
    """An ImportConfig for tests: port 0 (any free port), no auth, short retry budget and drain."""
    dimse_overrides = {k[6:]: overrides.pop(k) for k in list(overrides) if k.startswith("dimse_")}
    config = ImportConfig(
        dimse=DimseServerConfig(ae_title=IMPORT_AET, port=0, bind_address="127.0.0.1"),
        dicomweb=parse_dicomweb_address(dicomweb_url),
        auth=AuthConfig(kind=AuthKind.NONE),
        retry=RetryPolicy(initial_delay=0.05, max_delay=0.5, budget=2.0),
        shutdown_grace=2.0,
        spool_drain_timeout=2.0,
    )
    if dimse_overrides:
        config = replace(config, dimse=replace(config.dimse, **dimse_overrides))
    return replace(config, **overrides)


@contextmanager
def running_import_adapter(dicomweb_url: str, **overrides: Any) -> Iterator[ImportAdapter]:
    """An import adapter serving in this process on a free port; ``.server.port`` tells it."""
    adapter = ImportAdapter(import_config(dicomweb_url, **overrides))
    adapter.start()
    try:
        yield adapter
    finally:
        adapter.stop()


class AdapterProcess:
    """``dicom-adapter import ...`` as a real subprocess (for signals, RSS, the CLI itself)."""

    def __init__(self, args: Sequence[str], *, log_path: Path, env: dict[str, str] | None = None):
        self.port = free_port()
        self.args = ["--dimse_port", str(self.port), "--dimse-bind-address", "127.0.0.1", *args]
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> AdapterProcess:
        """Start and wait until the DIMSE port accepts connections."""
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "import_adapter", *self.args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"adapter exited early:\n{self.log()}")
            try:
                wait_for_port("127.0.0.1", self.port, timeout=0.2)
                return self
            except (TimeoutError, OSError):
                continue
        raise RuntimeError(f"adapter did not start:\n{self.log()}")

    def log(self) -> str:
        """The adapter's output so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def peak_rss_mb(self) -> float:
        """The process's peak resident memory (VmHWM) in MiB."""
        assert self.process is not None
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait for the exit status."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """Kill the process if it still runs."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> AdapterProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
