"""Signals: a deploy that is told to stop unwinds like Ctrl-C, and a put-back is not cut short."""

from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Iterator

STOPPING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def stop_like_ctrl_c() -> None:
    """SIGINT (Ctrl-C, `kill -INT`), SIGTERM (systemd, CI, `kill`) and SIGHUP (a closed terminal)
    raise KeyboardInterrupt, so a deploy stopped after its switch puts the previous release back
    before it exits.

    SIGINT is installed too: a process started with it ignored (a background job of a
    non-interactive shell, `cmd &` in a script) inherits SIG_IGN, and Python then installs no
    handler of its own, so the deploy would carry on through an interrupted restart. Python's
    own handler is the one installed, so asyncio.run (the orchestrator) still recognises it and
    cancels its main task on Ctrl-C as it does in a terminal."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)


@contextmanager
def shielded() -> Iterator[None]:
    """Hold off further stop signals while the live site is being put back: a second Ctrl-C
    must not leave it half restored."""
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in STOPPING}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
