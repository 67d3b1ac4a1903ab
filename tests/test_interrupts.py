"""micro_seg.interrupts.deferred_interrupts: signals held during a critical section are delivered after it."""

from __future__ import annotations

import os
import signal

import pytest

from micro_seg.interrupts import deferred_interrupts


@pytest.fixture()
def sigterm_recorder():
    got: list[int] = []
    old = signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))
    yield got
    signal.signal(signal.SIGTERM, old)


def test_a_held_sigterm_reaches_its_handler_after_the_block(sigterm_recorder):
    with deferred_interrupts():
        os.kill(os.getpid(), signal.SIGTERM)
        assert sigterm_recorder == []  # held while the block runs
    assert sigterm_recorder == [signal.SIGTERM]


def test_ctrl_c_and_sigterm_held_together_are_both_delivered(sigterm_recorder, ctrl_c_raises):
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupts():
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
    assert sigterm_recorder == [signal.SIGTERM]  # not lost behind the KeyboardInterrupt


def test_a_signal_handled_while_the_handlers_are_swapped_in_leaves_none_behind(monkeypatch, ctrl_c_raises):
    """A SIGTERM handled (as KeyboardInterrupt, the CLI's handler) just as the block swapped in its SIGTERM handler
    left the block's SIGINT handler in place for good: every later Ctrl-C was noted into a list nobody reads.
    Now whatever was swapped in is put back before the stop propagates."""
    real = signal.signal
    calls = []

    def swap_then_stop(sig, handler):
        calls.append(sig)
        if len(calls) == 2:  # the second swap (SIGTERM): a pending SIGTERM's handler raises here
            raise KeyboardInterrupt
        return real(sig, handler)

    monkeypatch.setattr(signal, "signal", swap_then_stop)
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupts():
            pass
    monkeypatch.setattr(signal, "signal", real)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
