"""Local background processes: the Kafka broker and schema registry (Java, jars resolved by
Maven) and the services started by `tagstream stack up`.

A process lives in a state directory: ``<name>.pid``, ``<name>.log``. Starting is idempotent
(a live pid is left alone), readiness is a caller-supplied probe polled against a deadline,
and a failed start raises :class:`LocalProcessError` carrying the log tail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path


class LocalProcessError(RuntimeError):
    pass


def resolve_jars(pom: Path, target: Path, goal: str = "dependency:copy-dependencies") -> Path:
    """Put what ``pom`` names into ``target`` once: by default its runtime classpath
    (``mvn dependency:copy-dependencies``); ``goal="dependency:unpack"`` unpacks its artifact items."""
    marker = target / ".complete"
    if marker.exists():
        return target
    if shutil.which("mvn") is None:
        raise LocalProcessError("Maven (mvn) is not on PATH; it is needed once to fetch the jars")
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mvn", "-q", "-B", "-f", str(pom), goal, f"-DoutputDirectory={staging}"],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise LocalProcessError(f"mvn could not resolve {pom}:\n{(result.stdout + result.stderr)[-3000:]}")
    (staging / ".complete").write_text(pom.read_text())
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def log_tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class LocalProcess:
    def __init__(self, name: str, state_dir: Path) -> None:
        self.name = name
        self.state_dir = state_dir
        self.pid_file = state_dir / f"{name}.pid"
        self.log_file = state_dir / f"{name}.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def spawn(self, command: Sequence[str], env: dict[str, str] | None = None) -> int:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            process = subprocess.Popen(
                list(command),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.state_dir,
                env={**os.environ, **(env or {})},
                start_new_session=True,  # survives the CLI that started it; not killed by its ^C
            )
        self.pid_file.write_text(str(process.pid))
        return process.pid

    def wait_ready(self, probe: Callable[[], bool], deadline_s: float, what: str) -> None:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if probe():
                return
            if self.pid() is None:
                raise LocalProcessError(
                    f"{what} exited during start-up. Log tail ({self.log_file}):\n{log_tail(self.log_file)}"
                )
            time.sleep(0.2)
        raise LocalProcessError(
            f"{what} not ready after {deadline_s:.0f}s. "
            f"Log tail ({self.log_file}):\n{log_tail(self.log_file)}"
        )

    def stop(self, timeout_s: float = 30.0) -> bool:
        """SIGTERM, wait, then SIGKILL. Returns False when nothing was running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and pid_alive(pid):
            _reap(pid)
            time.sleep(0.1)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            while pid_alive(pid):
                _reap(pid)
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        return True


def _reap(pid: int) -> None:
    # Our own child (spawned in this process) stays a zombie until reaped.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
