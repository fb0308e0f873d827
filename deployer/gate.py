"""The server's half of an orchestrated activation (docs/design.md §13): the barrier.

An orchestrator runs `activate`/`rollback --orchestrated ID` on every server. Each stops at two
points and waits for the word of the orchestrator, who has heard from every server:

    migrated   (the schema step is done; the orchestrator starts the other servers)
    prepared → waits for "go"      (nothing live has changed yet)
    live     → waits for "commit"  (switched and smoke-tested through this server's front door)

Events are lines on stdout starting with EVENT; words are JSON lines on stdin. "abort" or
"revert" (another server failed), stdin closing (the orchestrator went away) or no word within
the barrier's deadline raises Overruled where the server waits, and activate puts back what it
changed, as for any failure.

The migrations server puts the schema back last, once no server runs the new code: when it
fails by itself after the others started, it says "schema-hold" and waits for the word
"restore-schema", which the orchestrator sends once every other server is back (§13).
"""

from __future__ import annotations

import json
import os
import select
import sys
import time
from typing import Callable, TextIO

from deployer import history
from deployer.errors import OperationFailed

EVENT = "@deployer "
BARRIER_TIMEOUT = 3600.0  # how long a server waits for a word at a barrier (the orchestrator passes its own)
PUT_BACK_TIMEOUT = 300.0  # with the orchestrator gone: how long the migrations server gives the others before its schema moves


class Overruled(OperationFailed):
    """The orchestrator called this activation off; `result` is what history records."""

    def __init__(self, message: str, result: str) -> None:
        super().__init__(message)
        self.result = result


class Words:
    """Lines from a file descriptor with a deadline: None when none came in time, "" at its end."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = b""
        self._ended = False

    def readline(self, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer and not self._ended:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            readable, _, _ = select.select([self._fd], [], [], remaining)
            if readable:
                chunk = os.read(self._fd, 4096)
                self._buffer += chunk
                self._ended = not chunk
        line, newline, self._buffer = self._buffer.partition(b"\n")
        return (line + newline).decode("utf-8", errors="replace")


class Gate:
    def __init__(self, deploy_id: str, owns_schema: bool, words: Words | None = None,
                 events: TextIO | None = None, barrier_timeout: float = BARRIER_TIMEOUT,
                 put_back_timeout: float = PUT_BACK_TIMEOUT) -> None:
        self.deploy_id = deploy_id
        self.owns_schema = owns_schema
        self.barrier_timeout = barrier_timeout
        self.put_back_timeout = put_back_timeout
        self._words = words or Words(sys.stdin.fileno())
        self._events = events or sys.stdout
        self._others_started = False  # after "migrated" the other servers run the new code too
        self._others_back = False  # the orchestrator's "abort"/"revert" comes to this server last
        self.failure = ""  # why this activation failed, for the orchestrator while it holds the schema

    def tell(self, event: str, **fields) -> None:
        self._events.write(EVENT + json.dumps({"event": event, **fields}) + "\n")
        self._events.flush()
        if event == "migrated":
            self._others_started = True

    def step_started(self, name: str) -> None:
        """Where this server is, so that an orchestrator's deadline can name the step."""
        self.tell("step", name=name)

    def wait(self, event: str, proceed: str, **fields) -> None:
        """Say `event`, then wait for `proceed`; anything else calls the activation off."""
        self.tell(event, **fields)
        line = self._words.readline(self.barrier_timeout)
        if line is None:
            raise Overruled(f"no word from the orchestrator within {self.barrier_timeout:g}s after '{event}'",
                            history.FAILED)
        if not line:
            raise Overruled("the orchestrator went away (its connection closed)", history.FAILED)
        word = _parsed(line)
        told = word.get("do")
        if told == proceed:
            return
        self._others_back = True
        # Another server's failure marks the release failed here too; an interrupted orchestrator does not.
        result = history.FAILED if word.get("result") == history.FAILED else history.FAILED_SMOKE
        raise Overruled(str(word.get("reason") or f"the orchestrator said {told!r}"), result)

    def wait_for_schema_turn(self, note: Callable[[str], None]) -> None:
        """Before the migrations server puts the schema back: wait until no other server runs
        the new code. The orchestrator's word comes once it has put every other server back
        (within the barrier's deadline: it may have to put back one whose deployer died). Without
        it (the orchestrator gone) the others put themselves back on their own: give them
        put_back_timeout seconds, then go on."""
        if not self._others_started or self._others_back:
            return
        self.tell("schema-hold", reason=self.failure)
        line = self._words.readline(self.barrier_timeout)
        if line is None:
            note(f"no word from the orchestrator within {self.barrier_timeout:g}s; putting the schema back")
        elif not line:
            note(f"the orchestrator went away: giving the other servers {self.put_back_timeout:g}s "
                 "to put themselves back before the schema moves")
            time.sleep(self.put_back_timeout)


def _parsed(line: str) -> dict:
    try:
        word = json.loads(line)
    except ValueError:
        return {}
    return word if isinstance(word, dict) else {}
