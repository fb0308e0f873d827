"""Capistrano-style output: an ordered list of named steps, one line each with its duration."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from deployer.errors import DeployError

DOTS_TO = 40  # the column the dots lead to; a longer label still gets a few
MIN_DOTS = 3


def dotted(label: str) -> str:
    """`label` and a run of dots to the column, never fewer than MIN_DOTS (a long step name)."""
    return label + "." * max(MIN_DOTS, DOTS_TO - len(label))


class Progress:
    """Numbers and times the steps of one command; a failure names the step."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.number = 0
        self.durations: dict[str, float] = {}
        self.earlier: dict[str, float] = {}  # parts of the command before these steps (a deploy's build)
        self.notes: list[str] = []
        self.listeners: list[Callable[[str], None]] = []  # told each step's name as it starts

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.number += 1
        for listener in self.listeners:
            listener(name)
        label = f"[{self.number}/{self.total}] {name} "
        print(dotted(label), end=" ", file=sys.stderr, flush=True)
        started = time.monotonic()
        try:
            yield
        except BaseException as exc:
            elapsed = time.monotonic() - started
            print(f"FAILED {elapsed:.2f}s", file=sys.stderr, flush=True)
            self._flush_notes()
            if isinstance(exc, DeployError) and not exc.message.startswith("step "):
                exc.message = f"step '{name}' failed: {exc.message}"
                exc.args = (exc.message,)
            raise
        elapsed = time.monotonic() - started
        self.durations[name] = round(elapsed, 3)
        print(f"ok {elapsed:.2f}s", file=sys.stderr, flush=True)
        self._flush_notes()

    def note(self, message: str) -> None:
        """A detail of the running step, printed under its line."""
        self.notes.append(message)

    def _flush_notes(self) -> None:
        for message in self.notes:
            print(f"    {message}", file=sys.stderr, flush=True)
        self.notes.clear()


def say(message: str) -> None:
    """A line of progress that is not a step."""
    print(message, file=sys.stderr, flush=True)
