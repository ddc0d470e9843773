"""SIGINT and SIGTERM end a command the same way: the run in progress is stored whole or not at all, then one line.

`stop_on_signals()` makes SIGTERM raise `Interrupted` (a KeyboardInterrupt, as SIGINT already does) for the
whole command; `signals_deferred()` holds both signals while a run is being written and raises right after, so
an interruption never splits a store write. The command line prints one line and exits 128 + the signal number
(130 for SIGINT, 143 for SIGTERM).
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_state = {"depth": 0, "pending": None}


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; `signum` says which."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def signal_number(exc: BaseException) -> int:
    """The signal behind a KeyboardInterrupt (SIGINT unless it is an Interrupted that says otherwise)."""
    return getattr(exc, "signum", signal.SIGINT)


def _handler(signum, frame) -> None:
    if _state["depth"]:
        _state["pending"] = _state["pending"] or signum
        return
    raise Interrupted(signum)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _install() -> dict:
    """Our handler for SIGINT and SIGTERM, except where the signal is ignored (e.g. a job started with nohup)."""
    return {s: signal.signal(s, _handler) for s in SIGNALS if signal.getsignal(s) is not signal.SIG_IGN}


@contextmanager
def stop_on_signals():
    """SIGINT and SIGTERM raise Interrupted inside this block (the main thread only: others cannot set handlers)."""
    if not _in_main_thread():
        yield
        return
    previous = _install()
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextmanager
def signals_deferred():
    """Hold SIGINT and SIGTERM inside this block; one that arrived is raised as Interrupted when it ends."""
    previous = _install() if _in_main_thread() else {}
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
        for s, h in previous.items():
            signal.signal(s, h)
        if not _state["depth"] and _state["pending"] is not None:
            signum, _state["pending"] = _state["pending"], None
            raise Interrupted(signum)
