"""The documentation keeps up with the code it describes."""

from __future__ import annotations

from pathlib import Path

import attrs

from trio_sudp import SessionSettings

ROOT = Path(__file__).resolve().parents[1]


def test_every_timer_setting_is_documented() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    missing = [f.name for f in attrs.fields(SessionSettings) if f"| `{f.name}` |" not in text]
    assert missing == []


def test_readme_library_example_is_the_runnable_one() -> None:
    readme = (ROOT / "README.md").read_text()
    example = (ROOT / "examples" / "echo.py").read_text()
    for line in (
        "async for vaddr, payload in server:",
        "local=LocalIdentity(0, server_key),",
        "peers=[Peer(1, client_key.public_key, Version.V3, SHARED_KEY)],",
        "server=Peer(0, server_key.public_key, Version.V3, SHARED_KEY),",
    ):
        assert line in readme
        assert line in example


def test_readme_commands_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "    scripts/demo" in readme
    assert "    scripts/test" in readme
    assert (ROOT / "scripts" / "demo").is_file()
    ci = (ROOT / ".ci" / "run").read_text()
    # The README's test command, not a copy, once per Python version.
    assert "PYTHON=${pythons[$i]} VENV=$venv scripts/test" in ci
    readme_line = "    PYTHON=python3.13 VENV=.venv-3.13 scripts/test"
    assert readme_line in readme
    assert "venv=${VENV:-.venv}" in (ROOT / "scripts" / "test").read_text()
