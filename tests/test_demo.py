"""The README's demo command: the in-memory fallback (the namespace demo runs in e2e)."""

from __future__ import annotations

import pytest
import trio

from trio_sudp.daemon.demo import memory_demo
from trio_sudp.protocol import Version


@pytest.mark.parametrize("version", [Version.V2, Version.V3])
def test_in_memory_demo_pings_and_transfers(version: Version) -> None:
    lines = trio.run(memory_demo, version, 1)
    text = "\n".join(lines)
    assert f"SUDP v{version} tunnel up" in text
    assert text.count("ping 10.0.0.1: seq=") == 3
    assert "transfer: 1.0 MB client -> server" in text
    assert "server sees peer 1 (demo-client)" in text
