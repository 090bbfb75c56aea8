"""The README's demo command works."""

from __future__ import annotations

from trio_sudp.demo import run_in_memory_demo
from trio_sudp.protocol import Version


def test_in_memory_demo_round_trips_a_message() -> None:
    for version in (Version.V2, Version.V3):
        lines = run_in_memory_demo(version)
        assert "client established, server established" in lines
        assert "server received b'hello over SUDP'" in lines
        assert "client received b'hello back'" in lines
