"""``tagstream stack up|down|status``: the broker and every service, in the background.

Logs and pids live under ``<data_dir>/stack``; each service is ``tagstream run NAME`` in its own
process group, so ``down`` (SIGTERM) lets each finish its batch and commit.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from services.cli.service_registry import available
from services.common.broker import LocalBroker
from services.common.kafka import ensure_topics
from services.common.localproc import LocalProcess
from services.common.settings import Settings


@dataclass(frozen=True)
class ServiceState:
    name: str
    pid: int | None
    log: str


def _process(settings: Settings, name: str) -> LocalProcess:
    return LocalProcess(name, settings.data_dir / "stack")


def up(settings: Settings, say: callable = print) -> list[ServiceState]:  # type: ignore[valid-type]
    if settings.uses_local_broker:
        say(f"starting Kafka broker (KRaft) on {settings.bootstrap_servers} ...")
        LocalBroker(settings).start()
    else:
        say(f"using the Kafka cluster at {settings.bootstrap_servers}")
    created = [s.name for s in ensure_topics(settings) if s.action == "created"]
    say(f"topics ready ({len(created)} created)")
    states = []
    for name in available():
        process = _process(settings, name)
        if process.pid() is None:
            process.spawn([sys.executable, "-m", "services.cli", "run", name])
            say(f"started {name} (log: {process.log_file})")
        states.append(ServiceState(name, process.pid(), str(process.log_file)))
    return states


def down(settings: Settings, say: callable = print) -> None:  # type: ignore[valid-type]
    for name in reversed(available()):
        if _process(settings, name).stop(timeout_s=60.0):
            say(f"stopped {name}")
    if settings.uses_local_broker and LocalBroker(settings).stop():
        say("stopped Kafka broker")


def status(settings: Settings) -> list[ServiceState]:
    states = [
        ServiceState(
            "broker", LocalBroker(settings).status().pid, str(LocalBroker(settings).process.log_file)
        )
    ]
    for name in available():
        process = _process(settings, name)
        states.append(ServiceState(name, process.pid(), str(process.log_file)))
    return states
