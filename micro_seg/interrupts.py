"""Keep Ctrl-C and SIGTERM out of short critical sections (a result's database write and its count).

Python raises :class:`KeyboardInterrupt` between any two bytecodes, so a stop can land after a result's
``COMMIT`` but before the batch counts it (the run then says it processed one image fewer than its tables
hold), or after ``BEGIN`` but before the ``try`` that would roll it back (the run's closing write then fails
on the open transaction). Inside :func:`deferred_interrupts` such a signal is only noted; it takes effect,
through the handler that was in place, when the block ends.

Examples
--------
>>> import os, signal
>>> old = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (nohup would ignore it)
>>> hits = []
>>> try:
...     with deferred_interrupts():
...         os.kill(os.getpid(), signal.SIGINT)   # Ctrl-C in the middle of the block
...         hits.append("block finished")
... except KeyboardInterrupt:
...     hits.append("interrupted after it")
>>> hits
['block finished', 'interrupted after it']
>>> _ = signal.signal(signal.SIGINT, old)
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from typing import Iterator

__all__ = ["deferred_interrupts"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold SIGINT / SIGTERM until the block ends, then deliver them to the handlers that were in place.

    Only the main thread can install signal handlers: elsewhere (a napari worker, a thread pool) the block
    runs unprotected, as before.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def _note(signum, frame):  # noqa: ARG001 (signal handler signature)
        pending.append(signum)

    old = {}
    try:
        for sig in _SIGNALS:
            old[sig] = signal.signal(sig, _note)
    except (ValueError, OSError):  # not settable here (embedded interpreter): run unprotected
        _restore(old)
        yield
        return
    except BaseException:  # a pending signal's handler raised (the CLI's SIGTERM -> KeyboardInterrupt) mid-swap:
        _restore(old)  # leave no handler of ours behind
        raise
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        held = list(dict.fromkeys(pending))
        for i, signum in enumerate(held):
            try:
                _deliver(signum, old[signum])
            except BaseException:
                # Ctrl-C's KeyboardInterrupt must not swallow a SIGTERM held with it: send the rest again, to
                # the handlers now in place
                for rest in held[i + 1:]:
                    os.kill(os.getpid(), rest)
                raise


def _restore(old: dict) -> None:
    for sig, handler in old.items():
        signal.signal(sig, handler)


def _deliver(signum: int, handler) -> None:
    if callable(handler):
        handler(signum, None)
    elif handler == signal.SIG_DFL:
        os.kill(os.getpid(), signum)  # the default action (SIGTERM: end the process), now unblocked
