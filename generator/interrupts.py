"""Ctrl-C with worker processes: the parent alone reacts, and never misses it.

Ctrl-C reaches every process of the terminal's foreground group. Only the parent should react (it
stops the pool and prints one hint); a worker would print a KeyboardInterrupt traceback, even while
still importing, before its initializer could run.

The parent *blocks* SIGINT while it starts workers rather than ignoring it: a blocked signal stays
pending and is delivered the moment the parent unblocks it, where an ignored one is simply lost (a
Ctrl-C pressed during pool start-up used to let the run go on and exit 0). The mask is inherited
through fork and kept across exec, so a worker is born with SIGINT blocked; its initializer ignores
SIGINT and then unblocks it, which discards a Ctrl-C that was pending for it.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

_SIGINT = {signal.SIGINT}


@contextmanager
def sigint_held() -> Iterator[None]:
    """Hold Ctrl-C back from this thread (and every process or thread it starts) until the block ends,
    then raise it (KeyboardInterrupt, or whatever the handler in place does).

    Blocking alone is not enough when the process has other threads (a progress bar's, a queue's
    feeder): the kernel then hands the signal to one of them, and Python raises it in the main thread
    at once, in the middle of starting a worker, which then reads half its start-up data and prints
    "EOFError: Ran out of input". So the handler only notes it while the block lasts.
    """
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield  # handlers run in the main thread only; Windows has no signal mask (workers still ignore it)
        return
    noted: list[int] = []
    previous_handler = signal.signal(signal.SIGINT, lambda signum, frame: noted.append(signum))
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGINT)
    try:
        yield
    finally:
        if signal.SIGINT not in previous_mask:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGINT)  # a Ctrl-C pending here is noted now
        signal.signal(signal.SIGINT, previous_handler)
        if noted:
            _deliver(previous_handler)


def _deliver(handler) -> None:
    """What a Ctrl-C would have done under ``handler`` (Python's own raises KeyboardInterrupt)."""
    if callable(handler):
        handler(signal.SIGINT, None)
    elif handler == signal.SIG_DFL:
        signal.raise_signal(signal.SIGINT)


def ignore_sigint_in_worker() -> None:
    """Pool initializer: a worker leaves Ctrl-C to its parent (ignore first, then drop the block)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGINT)
