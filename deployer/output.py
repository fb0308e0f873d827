"""Output is best effort (docs/design.md §3): a closed pipe, a vanished terminal or a dropped SSH
session must never decide what happens to the live site.

The first write to a stream that fails (EPIPE, EIO, a closed file) points its file descriptor at
/dev/null, so every later write, ours and our children's, goes nowhere and the run goes on:
a put-back still relinks, restarts and records.
"""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO


class BestEffort:
    """A text stream whose writes never raise."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.dropped = False

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except (OSError, ValueError):
            self._drop()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except (OSError, ValueError):
            self._drop()

    def _drop(self) -> None:
        """Send the descriptor to /dev/null: the buffered text and everything after it vanish."""
        self.dropped = True
        try:
            fd = self._stream.fileno()
            null = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(null, fd)
            finally:
                os.close(null)
            self._stream.flush()
        except (OSError, ValueError):
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def make_best_effort() -> None:
    """Wrap sys.stdout and sys.stderr (once): every print, click.echo and json.dump through them."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, BestEffort):
            setattr(sys, name, BestEffort(stream))
