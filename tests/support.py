"""Helpers shared by the test suite and the benchmarks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from vo_service.db.cluster import free_port


class ServerProcess:
    """``vo-service serve`` in its own process, as users run it."""

    def __init__(
        self, env: dict[str, str] | None = None, name: str = "server", workers: int = 1
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(os.environ["VO_SERVICE_HOME"]) / f"{name}-{self.port}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vo_service.cli.main", "serve", "--port", str(self.port)]
            + (["--workers", str(workers)] if workers > 1 else []),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.base}/tap/availability", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError("server did not start: " + self.log_path.read_text()[-3000:])
            time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()
