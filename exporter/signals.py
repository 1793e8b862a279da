"""Signals delivered to a thread of their own, as ordinary calls.

A Python signal handler runs in the main thread between two bytecodes, possibly while that same
thread is inside ``threading.Event.set`` or ``Event.wait`` holding the event's lock; a handler
that sets an event can then wait on a lock its own thread holds, and the process hangs for good
(a burst of SIGHUPs did exactly that). So no handler runs here: the signals are blocked in every
thread and one thread takes them with ``sigwait``, where calling anything is safe.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Mapping


def route(actions: Mapping[signal.Signals, Callable[[], None]]) -> None:
    """Block these signals and call each one's action, in order, from a daemon thread.

    Call before starting any other thread: a thread takes its signal mask from the thread that
    starts it, and a thread that left a signal unblocked would receive it with nobody to act.
    """
    wanted = set(actions)
    signal.pthread_sigmask(signal.SIG_BLOCK, wanted)

    def deliver() -> None:
        while True:
            actions[signal.Signals(signal.sigwait(wanted))]()

    threading.Thread(target=deliver, name="signals", daemon=True).start()
