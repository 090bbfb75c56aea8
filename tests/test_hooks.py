"""Hooks: real ``/bin/sh`` commands that record what they see in a file."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from trio_sudp.config import Hooks
from trio_sudp.daemon.hooks import HookFailed, run_hooks
from trio_sudp.daemon.run import describe_failure


class Lifecycle:
    """A stand-in for the daemon's interface, writing to the same log as the hooks."""

    def __init__(self, log: Path) -> None:
        self.log = log

    def note(self, event: str) -> None:
        with self.log.open("a") as out:
            out.write(event + "\n")

    def events(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def record(self, phase: str) -> str:
        """A hook command that writes ``phase %i`` to the log."""
        return f'echo "{phase} %i" >> {self.log}'

    @asynccontextmanager
    async def interface(self) -> AsyncIterator[None]:
        self.note("create")
        try:
            yield
        finally:
            self.note("remove")


@pytest.fixture
def life(tmp_path: Path) -> Lifecycle:
    return Lifecycle(tmp_path / "events")


def every_phase(life: Lifecycle, **override: tuple[str, ...]) -> Hooks:
    phases = ("pre_up", "post_up", "pre_down", "post_down")
    return Hooks(**{p: override.get(p, (life.record(p),)) for p in phases})


async def test_order_and_interface_name_like_wg_quick(life: Lifecycle) -> None:
    async with run_hooks(every_phase(life), "sudp7") as run, life.interface(), run.up():
        life.note("running")
    assert life.events() == [
        "pre_up sudp7",
        "create",
        "post_up sudp7",
        "running",
        "pre_down sudp7",
        "remove",
        "post_down sudp7",
    ]


async def test_environment_and_output_reach_the_log(
    life: Lifecycle, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TRIO_SUDP_HOOK_TEST", "from the daemon")
    hooks = Hooks(
        post_up=('echo "env: $TRIO_SUDP_HOOK_TEST"; echo "to stderr" >&2; printf "no newline"',)
    )
    caplog.set_level(logging.INFO, logger="trio_sudp.hooks")
    async with run_hooks(hooks, "sudp0") as run, run.up():
        pass
    lines = [r.getMessage() for r in caplog.records if r.name == "trio_sudp.hooks"]
    assert lines[0].startswith("post_up: echo")
    assert sorted(lines[1:]) == ["post_up: env: from the daemon", "post_up: no newline",
                                 "post_up: to stderr"]  # fmt: skip


async def test_a_failing_post_up_stops_the_start_and_undoes_it(life: Lifecycle) -> None:
    failing = ("echo 'first line' >&2; echo 'bad address 10.0.0.300' >&2; exit 3",)
    hooks = every_phase(life, post_up=(*failing, life.record("post_up after")))
    with pytest.raises(HookFailed) as caught:
        async with run_hooks(hooks, "sudp0") as run, life.interface(), run.up():
            life.note("running")  # pragma: no cover
    # The interface was removed as the block unwound; as in wg-quick, a start that
    # failed runs neither pre_down nor post_down, and the later post_up not at all.
    assert life.events() == ["pre_up sudp0", "create", "remove"]
    failure = caught.value
    assert failure.returncode == 3
    assert failure.last_line == "bad address 10.0.0.300"
    assert str(failure) == "post_up hook failed with exit code 3: bad address 10.0.0.300"
    assert describe_failure(failure) == (1, str(failure))


async def test_a_failing_pre_up_stops_before_the_interface_exists(life: Lifecycle) -> None:
    hooks = every_phase(life, pre_up=("exit 7",))
    with pytest.raises(HookFailed, match="pre_up hook failed with exit code 7: exit 7"):
        async with run_hooks(hooks, "sudp0") as run, life.interface(), run.up():
            pass  # pragma: no cover
    assert life.events() == []


async def test_a_failing_down_hook_is_logged_and_the_rest_still_runs(
    life: Lifecycle, caplog: pytest.LogCaptureFixture
) -> None:
    hooks = every_phase(life, pre_down=("echo gone >&2; exit 4", life.record("pre_down")))
    async with run_hooks(hooks, "sudp0") as run, life.interface(), run.up():
        pass
    assert life.events()[-3:] == ["pre_down sudp0", "remove", "post_down sudp0"]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == ["pre_down hook failed with exit code 4: gone"]


async def test_cancellation_still_runs_the_down_hooks(life: Lifecycle) -> None:
    with trio.CancelScope() as scope:
        async with run_hooks(every_phase(life), "sudp0") as run, life.interface(), run.up():
            scope.cancel()
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert life.events()[-3:] == ["pre_down sudp0", "remove", "post_down sudp0"]


async def test_a_hook_that_hangs_is_killed(life: Lifecycle) -> None:
    hooks = Hooks(pre_up=("echo waiting >&2; exec sleep 60",))
    with trio.fail_after(20):
        with pytest.raises(HookFailed) as caught:
            async with run_hooks(hooks, "sudp0", time_limit=0.5):
                pass  # pragma: no cover
    assert caught.value.returncode is None
    assert (
        str(caught.value)
        == "pre_up hook was killed after running too long: still running after 0.5 s"
    )


async def test_a_background_child_holding_the_output_does_not_block(
    life: Lifecycle, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    hooks = Hooks(post_up=(f"sleep 30 & echo $! > {pid_file}; echo started",))
    try:
        with trio.fail_after(20):
            async with run_hooks(hooks, "sudp0", time_limit=5) as run, run.up():
                pass
    finally:
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_hooks_take_any_sequence() -> None:
    assert Hooks(pre_up=["a", "b"]).pre_up == ("a", "b")  # type: ignore[arg-type]
    assert Hooks() == Hooks(pre_up=(), post_up=(), pre_down=(), post_down=())
    assert Hooks().empty
    assert not Hooks(post_down=["x"]).empty  # type: ignore[arg-type]
