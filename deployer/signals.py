"""Signals: a deploy that is told to stop unwinds like Ctrl-C, and a put-back is not cut short."""

from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Iterator

STOPPING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def stop_like_ctrl_c() -> None:
    """SIGTERM (systemd, CI, `kill`) and SIGHUP (a closed terminal) raise KeyboardInterrupt, so a
    deploy stopped after its switch puts the previous release back before it exits."""
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
