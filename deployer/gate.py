"""The server's half of an orchestrated activation (docs/design.md §13): the barrier.

An orchestrator runs `activate`/`rollback --orchestrated ID` on every server. Each stops at two
points and waits for the word of the orchestrator, who has heard from every server:

    migrated   (the schema step is done; the orchestrator starts the other servers)
    prepared → waits for "go"      (nothing live has changed yet)
    live     → waits for "commit"  (switched and smoke-tested through this server's front door)

Events are lines on stdout starting with EVENT; words are JSON lines on stdin. "abort" or
"revert" (another server failed), or stdin closing (the orchestrator went away), raises
Overruled where the server waits, and activate puts back what it changed, as for any failure.
"""

from __future__ import annotations

import json
import sys
from typing import TextIO

from deployer import history
from deployer.errors import OperationFailed

EVENT = "@deployer "


class Overruled(OperationFailed):
    """The orchestrator called this activation off; `result` is what history records."""

    def __init__(self, message: str, result: str) -> None:
        super().__init__(message)
        self.result = result


class Gate:
    def __init__(self, deploy_id: str, owns_schema: bool, words: TextIO | None = None,
                 events: TextIO | None = None) -> None:
        self.deploy_id = deploy_id
        self.owns_schema = owns_schema
        self._words = words or sys.stdin
        self._events = events or sys.stdout

    def tell(self, event: str, **fields) -> None:
        self._events.write(EVENT + json.dumps({"event": event, **fields}) + "\n")
        self._events.flush()

    def wait(self, event: str, proceed: str, **fields) -> None:
        """Say `event`, then wait for `proceed`; anything else calls the activation off."""
        self.tell(event, **fields)
        line = self._words.readline()
        if not line:
            raise Overruled("the orchestrator went away (its connection closed)", history.FAILED)
        try:
            word = json.loads(line)
        except ValueError:
            word = {}
        told = word.get("do") if isinstance(word, dict) else None
        if told == proceed:
            return
        reason = str(word.get("reason") or f"the orchestrator said {told!r}") if isinstance(word, dict) else "?"
        raise Overruled(reason, history.FAILED_SMOKE)
