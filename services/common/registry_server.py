"""A local Confluent-compatible schema registry: Apicurio Registry, run as a Java process.

Its runnable distribution (``io.apicurio:apicurio-registry-app:<version>:tar.gz:all``, a Quarkus
runner jar plus ``lib/``) comes from Maven Central through ``deploy/apicurio/pom.xml`` and is
unpacked once under ``<cache_dir>/apicurio-<version>``. Storage is in memory (H2): schemas last
as long as the process, which is what tests and demos want. The Confluent API answers under
:data:`CCOMPAT_PATH`; point ``TAGSTREAM_SCHEMA_REGISTRY_URL`` at :meth:`LocalRegistry.url`.

Version 2.6 is pinned on purpose: the 3.x line runs only on Java 21, and our machines have 17.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx

from services.common.localproc import LocalProcess, LocalProcessError, resolve_jars
from services.common.settings import REPO_ROOT, Settings

APICURIO_POM = REPO_ROOT / "deploy" / "apicurio" / "pom.xml"
APICURIO_VERSION = "2.6.13.Final"  # keep in step with deploy/apicurio/pom.xml
CCOMPAT_PATH = "/apis/ccompat/v7"


class RegistryError(LocalProcessError):
    pass


@dataclass(frozen=True)
class RegistryStatus:
    running: bool
    pid: int | None
    url: str
    log_file: Path


def apicurio_dir(settings: Settings) -> Path:
    """The unpacked distribution (fetched with Maven on first use)."""
    return resolve_jars(
        APICURIO_POM, settings.cache_dir / f"apicurio-{APICURIO_VERSION}", "dependency:unpack"
    )


def runner_jar(distribution: Path) -> Path:
    jars = sorted(distribution.glob("apicurio-registry-app-*-runner.jar"))
    if not jars:
        raise RegistryError(f"no apicurio-registry-app-*-runner.jar in {distribution}")
    return jars[0]


def registry_answers(url: str, timeout: float = 1.0) -> bool:
    """True once the Confluent API lists subjects (storage initialised, HTTP up)."""
    try:
        return httpx.get(f"{url}/subjects", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


class LocalRegistry:
    def __init__(self, settings: Settings, heap: str = "384m") -> None:
        self.settings = settings
        self.dir = settings.data_dir / "registry"
        self.process = LocalProcess("registry", self.dir)
        self.heap = heap

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.registry_port}{CCOMPAT_PATH}"

    def status(self) -> RegistryStatus:
        pid = self.process.pid()
        return RegistryStatus(pid is not None, pid, self.url, self.process.log_file)

    def start(self, deadline_s: float = 90.0) -> RegistryStatus:
        """Start unless running; return once the Confluent API answers."""
        if self.process.pid() is None:
            distribution = apicurio_dir(self.settings)
            self.process.spawn(
                [
                    "java",
                    f"-Xmx{self.heap}",
                    # A short-lived test/dev server: C1 only and the serial collector start it in
                    # about half the time and keep it small on a shared machine.
                    "-XX:TieredStopAtLevel=1",
                    "-XX:+UseSerialGC",
                    f"-Dquarkus.http.port={self.settings.registry_port}",
                    "-Dquarkus.http.host=127.0.0.1",
                    "-jar",
                    str(runner_jar(distribution).resolve()),
                ]
            )
        try:
            self.process.wait_ready(lambda: registry_answers(self.url), deadline_s, "Apicurio Registry")
        except LocalProcessError as exc:
            raise RegistryError(str(exc)) from None
        return self.status()

    def stop(self) -> bool:
        return self.process.stop(timeout_s=30.0)
