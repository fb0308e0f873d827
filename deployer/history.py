"""state/history.jsonl: one JSON line per activation, append-only and fsynced (docs/design.md §6.6).

`list`, `status` and `rollback` derive everything from it: what is live, what was live before,
which releases failed their smoke test.
"""

from __future__ import annotations

import errno
import getpass
import json
import os
import socket
from datetime import datetime, timezone

from deployer.paths import SHA_RE, Paths

OK = "ok"
FAILED_SMOKE = "failed-smoke"
FAILED = "failed"  # the attempt was interrupted or the deployer itself failed; put back


def append(paths: Paths, action: str, from_sha: str | None, to_sha: str, result: str, **extra) -> dict:
    entry = {
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "user": getpass.getuser(),
        "host": socket.gethostname(),
        "action": action,
        "from": from_sha,
        "to": to_sha,
        "result": result,
        **{key: value for key, value in extra.items() if value is not None},
    }
    paths.ensure_state()
    fd = os.open(paths.history_file, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        line = (json.dumps(entry, sort_keys=True) + "\n").encode()
        if _ends_torn(fd):
            line = b"\n" + line  # a run killed mid-write left half a line; never glue onto it
        write_all(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    return entry


def _ends_torn(fd: int) -> bool:
    size = os.fstat(fd).st_size
    return size > 0 and os.pread(fd, 1, size - 1) != b"\n"


def write_all(fd: int, data: bytes) -> None:
    """os.write may write less than asked (a full disk, a signal): loop, or fail loudly."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.EIO, "short write", None)
        view = view[written:]


def read(paths: Paths) -> list[dict]:
    """All entries, oldest first. A torn last line (a kill mid-write) is skipped."""
    try:
        lines = paths.history_file.read_bytes().splitlines()
    except FileNotFoundError:
        return []
    entries = []
    for line in lines:
        try:
            entry = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            continue
        if _well_formed(entry):
            entries.append(entry)
    return entries


def _well_formed(entry: object) -> bool:
    """Only lines this module could have written count: a hand-edited or corrupted line is
    skipped rather than trusted (a list where a sha belongs must never reach a rollback)."""
    if not isinstance(entry, dict):
        return False
    to, frm = entry.get("to"), entry.get("from")
    return (
        isinstance(to, str) and SHA_RE.fullmatch(to) is not None
        and (frm is None or (isinstance(frm, str) and SHA_RE.fullmatch(frm) is not None))
        and isinstance(entry.get("result", ""), str)
        and isinstance(entry.get("action", ""), str)
    )


def live_stack(entries: list[dict]) -> list[str]:
    """The releases that were live, oldest first, as a stack that a rollback pops.

    deploy A, deploy B, deploy C, rollback  -> [A, B]: the next rollback goes to A, not back to C.
    """
    stack: list[str] = []
    for entry in entries:
        if entry.get("result") != OK:
            continue
        target = entry["to"]
        if entry.get("action") == "rollback" and target in stack:
            del stack[len(stack) - stack[::-1].index(target):]
        elif not stack or stack[-1] != target:
            stack.append(target)
    return stack


def last_live(entries: list[dict]) -> str | None:
    """The release the last completed activation made live."""
    stack = live_stack(entries)
    return stack[-1] if stack else None


def failed_smoke(entries: list[dict]) -> set[str]:
    """Releases whose latest activation failed its smoke test."""
    latest: dict[str, str] = {}
    for entry in entries:
        if entry.get("action") in ("activate", "deploy", "rollback"):
            latest[entry["to"]] = entry.get("result", "")
    return {sha for sha, result in latest.items() if result == FAILED_SMOKE}


def rollback_target(entries: list[dict], current: str | None) -> str | None:
    """The release that was live before `current`, never one that failed its smoke test."""
    stack = live_stack(entries)
    bad = failed_smoke(entries)
    if current in stack:
        stack = stack[: len(stack) - stack[::-1].index(current) - 1]
    for sha in reversed(stack):
        if sha != current and sha not in bad:
            return sha
    return None
