"""The examples the README shows actually run."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import trio
import trio.testing

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_echo_example_over_loopback() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "echo.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = done.stdout.splitlines()
    assert lines[0] == "b'HELLO OVER SUDP'"
    assert lines[1].startswith("epoch ")


def test_fake_network_example() -> None:
    spec = importlib.util.spec_from_file_location("example", EXAMPLES / "test_with_fake_network.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    clock = trio.testing.MockClock(autojump_threshold=0)
    trio.run(module.test_echo_survives_a_lossy_link, clock, clock=clock)
