"""Service processes started the way users start them, their output kept in a file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent


class ServiceProcess:
    """A service process whose stderr goes to a file, read once it has stopped."""

    def __init__(
        self, command: list[str], env: dict[str, str], log: Path, cwd: Path = ROOT
    ) -> None:
        self.log = log
        self._out: IO[bytes] = log.open("wb")
        self.popen = subprocess.Popen(
            [sys.executable, *command], cwd=cwd, env=env, stdout=self._out, stderr=self._out
        )

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._out.close()

    def lines(self) -> list[dict[str, Any]]:
        """Every line it wrote, each of which must be one JSON object."""
        text = self.log.read_text()
        return [json.loads(line) for line in text.splitlines() if line.strip()]
