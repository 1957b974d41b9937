"""TESTS ONLY: fault-injection aids for `make chaos` (tests/chaos.py). Off unless their settings are set.

- :func:`with_outage` (``TAGSTREAM_LOADER_TEST_CLICKHOUSE_DOWN_FILE``): while that file exists,
  every call the loader makes to ClickHouse raises clickhouse-connect's ``OperationalError``, the
  error a client gets when its server is unreachable. chDB is embedded in the loader, so there is
  no server to stop (and as root, data-dir permissions stop nothing); this puts the outage at the
  client boundary, so the loader's own recovery (retry the uncommitted batch, same tokens) runs as
  it would against a server that went away.
- ``TAGSTREAM_LOADER_TEST_UNSAFE_COMMIT_FIRST`` (in ``main.py``): commit the offsets before
  inserting, the bug exactly-once loading exists to avoid; the chaos check must catch it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clickhouse_connect.driver.exceptions import OperationalError

_CALLS = ("command", "insert", "query", "raw_query", "raw_insert")


def with_outage(client: Any, down_file: Path) -> Any:
    """``client`` made unreachable while ``down_file`` exists. Same object, a subclass of its own
    class with the same name, so everything that looks at the client (the chDB fast path) still
    sees what it is."""
    base = type(client)

    def guarded(name: str) -> Any:
        original = getattr(base, name)

        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            if down_file.exists():
                raise OperationalError(f"fault injection: ClickHouse unreachable ({down_file} exists)")
            return original(self, *args, **kwargs)

        return call

    client.__class__ = type(base.__name__, (base,), {n: guarded(n) for n in _CALLS if hasattr(base, n)})
    return client
