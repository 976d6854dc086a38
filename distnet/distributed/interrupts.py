"""Ctrl-C between two writes of the books, never in the middle of one (no ray here).

Booking a step is several Python statements (a loop takes it off its queue, the ledger
appends its loss and adds its gradients to the counters, ...). A KeyboardInterrupt raised
between two of them leaves the books disagreeing with themselves (a step read but in
neither the queue nor the history, a loss without its gradients, a gradient applied but
not counted), and the checkpoint written on Ctrl-C keeps that for good. So while a run
trains, SIGINT raises KeyboardInterrupt as Python's own handler does, except inside an
`uninterrupted()` block, where it is raised as the block ends. Such blocks only move
state in memory and never wait (no ray.get, no file I/O), so Ctrl-C still ends every wait
at once; a second Ctrl-C is never held.

    with deferred_interrupts():      # the driver, around a run
        ...
        with uninterrupted():        # off the queue and into the books: both or neither
            pending.pop(0)
            ledger.record(stats, gradients)

Ray's shutdown is the other thing a Ctrl-C must not cut: a half-done ray.shutdown leaves
Ray's C++ core worker to be torn down again as the interpreter exits, which can crash the
process. `whole_shutdown()` holds a first SIGINT until it ends; a second one ends the
process at once (Ctrl-C always ends it, even a shutdown that hangs).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_depth = 0  # uninterrupted() blocks entered and not yet left
_deferred = False  # a SIGINT came inside one


def _on_sigint(signum, frame) -> None:
    global _deferred
    if _depth and not _deferred:
        _deferred = True
        return
    raise KeyboardInterrupt  # outside a block, or a second Ctrl-C: the user insists


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Let uninterrupted() blocks hold a SIGINT back while this block runs. Only in the
    main thread (the only one Python delivers signals to) and only over Python's own
    handler: a program that handles SIGINT itself keeps its handler."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@contextmanager
def uninterrupted() -> Iterator[None]:
    """Run the block whole: a SIGINT that comes inside it raises KeyboardInterrupt when
    the outermost such block ends (also when it ends by an exception); a second one at
    once."""
    global _depth, _deferred
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _deferred and not _depth:
            _deferred = False
            raise KeyboardInterrupt


@contextmanager
def whole_shutdown() -> Iterator[None]:
    """Run a shutdown whole: a first SIGINT in it raises KeyboardInterrupt once it has
    ended, a second exits at once with 130 (the shell's code for Ctrl-C). Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = 0

    def on_sigint(signum, frame) -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            os._exit(130)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if signals:
            raise KeyboardInterrupt
