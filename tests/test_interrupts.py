"""Ctrl-C held back inside the books' writes, and only there (distnet/distributed/interrupts.py)."""

import os
import signal

import pytest

from distnet.distributed.interrupts import deferred_interrupts, uninterrupted


def sigint() -> None:
    os.kill(os.getpid(), signal.SIGINT)  # handled in this, the main, thread


def test_a_sigint_inside_a_block_is_raised_as_it_ends():
    done = []
    with deferred_interrupts(), pytest.raises(KeyboardInterrupt):
        with uninterrupted():
            sigint()
            done.append("first")
            with uninterrupted():  # nested: raised by the outermost block only
                done.append("second")
            done.append("third")
    assert done == ["first", "second", "third"]


def test_outside_a_block_a_sigint_is_raised_at_once():
    done = []
    with deferred_interrupts(), pytest.raises(KeyboardInterrupt):
        sigint()
        done.append("after")
    assert done == []
    with deferred_interrupts(), uninterrupted():
        pass  # nothing left over from the last one
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_sigint_in_a_block_that_fails_still_ends_the_run():
    with deferred_interrupts(), pytest.raises(KeyboardInterrupt) as caught:
        with uninterrupted():
            sigint()
            raise ValueError("the block's own failure")
    assert isinstance(caught.value.__context__, ValueError)


def test_a_program_s_own_sigint_handler_is_kept():
    seen = []
    previous = signal.signal(signal.SIGINT, lambda *_: seen.append("mine"))
    try:
        with deferred_interrupts(), uninterrupted():
            sigint()
        assert seen == ["mine"]
    finally:
        signal.signal(signal.SIGINT, previous)
