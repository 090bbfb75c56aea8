"""The timer task of one peer: it sleeps until its session's next deadline, then runs it.

A session has one earliest deadline (:meth:`Session.next_deadline`, as aioquic's
``get_timer()``) and one entry point for it (:meth:`Session.handle_timer`). The task
sleeps in a cancel scope whose deadline is the session's; when a datagram moves the
deadline earlier (a NoSession hint, a completed handshake), the session raises
``timers_changed`` and :meth:`PeerTimer.reschedule` lowers the sleeping scope's
deadline. A deadline that moved later is noticed when the sleep ends. So a datagram
never wakes a timer that has nothing to do, and a sleeping timer holds no parking lot.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio

from ..protocol.session import Session

__all__ = ["PeerTimer"]

log = logging.getLogger("trio_sudp")

#: Task names, given so that Trio does not build one string per task (memory per peer).
_TASK_NAME = "trio_sudp.runtime.timers.PeerTimer.run"


def _abort(_: Any) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.SUCCEEDED


class PeerTimer:
    """Runs one session's timers in a task; ``after`` is called after each run."""

    __slots__ = ("_after", "_scope", "_session", "_sleep", "_vaddr")

    def __init__(self, session: Session, after: Callable[[], None]) -> None:
        self._session = session
        self._after = after
        self._vaddr = session.peer.vaddr
        #: The task's scope while it runs (cancelling it stops the timer).
        self._scope: trio.CancelScope | None = None
        #: The scope of the current sleep, whose deadline is the session's.
        self._sleep: trio.CancelScope | None = None

    @property
    def running(self) -> bool:
        """Whether the timer task was started and not stopped since."""
        return self._scope is not None

    def start_in(self, nursery: trio.Nursery) -> None:
        """Start the timer task in ``nursery`` (from synchronous code); running at once."""
        scope = self._scope = trio.CancelScope()
        nursery.start_soon(self._run, scope, name=_TASK_NAME)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the timer task here until :meth:`stop` or cancellation."""
        scope = self._scope = trio.CancelScope()
        task_status.started()
        await self._run(scope)

    def stop(self) -> None:
        """Stop the timer task (it may be started again)."""
        scope, self._scope = self._scope, None
        if scope is not None:
            scope.cancel()

    def reschedule(self) -> None:
        """The session's deadline may have moved earlier: lower the sleep's deadline."""
        sleep = self._sleep
        if sleep is not None:
            deadline = self._session.next_deadline()
            if deadline < sleep.deadline:
                sleep.deadline = deadline

    async def _run(self, scope: trio.CancelScope) -> None:
        session = self._session
        current_time = trio.current_time
        with scope:
            while True:
                deadline = session.next_deadline()
                if deadline > current_time():
                    with trio.CancelScope(deadline=deadline) as sleep:
                        self._sleep = sleep
                        try:
                            # trio.sleep_forever() without its own coroutine frame (memory).
                            await trio.lowlevel.wait_task_rescheduled(_abort)
                        finally:
                            self._sleep = None
                    continue
                now = current_time()
                session.handle_timer(now)
                self._after()
                if session.next_deadline() <= now:
                    # The session did not move its own deadline: never spin on it.
                    log.error("peer %d: a timer did not advance; backing off", self._vaddr)
                    await trio.sleep(0.05)
                else:
                    await trio.lowlevel.checkpoint()
