"""Ctrl-C held back inside the books' writes and Ray's shutdown, and only there
(distnet/distributed/interrupts.py)."""

import os
import signal

import pytest

from distnet.distributed.interrupts import deferred_interrupts, uninterrupted, whole_shutdown


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


def test_a_shutdown_runs_whole_then_the_sigint_is_raised():
    done = []
    with pytest.raises(KeyboardInterrupt), whole_shutdown():
        sigint()
        done.append("shut down")
    assert done == ["shut down"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_sigint_ends_a_shutdown_at_once():
    """In a child process: the second Ctrl-C exits with 130 in the middle of the block."""
    import subprocess
    import sys

    code = (
        "import os, signal, time\n"
        "from distnet.distributed.interrupts import whole_shutdown\n"
        "with whole_shutdown():\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(5)\n"
        "    print('not reached')\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert (child.returncode, child.stdout) == (130, ""), child.stderr


def test_a_second_sigint_in_a_block_is_not_held():
    done = []
    with deferred_interrupts(), pytest.raises(KeyboardInterrupt):
        with uninterrupted():
            sigint()
            done.append("held")
            sigint()
            done.append("not reached")
    assert done == ["held"]
