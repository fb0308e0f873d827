"""The deploy lock: flock(2) on state/deploy.lock (issue 3 §7).

The kernel drops a flock when its holder dies, so a `kill -9` never leaves a stale lock; the
holder's description written into the file is only information for the next caller.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Iterator

from deployer.errors import LockHeld
from deployer.paths import Paths


def describe_holder(holder: dict) -> str:
    return (
        f"pid {holder.get('pid')} ({holder.get('user')}@{holder.get('host')}, "
        f"'{holder.get('command')}', since {holder.get('since')})"
    )


@contextmanager
def deploy_lock(paths: Paths, command: str, wait: float = 0) -> Iterator[None]:
    paths.state.mkdir(parents=True, exist_ok=True)
    fd = os.open(paths.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _acquire(fd, paths, wait)
        holder = {
            "pid": os.getpid(),
            "user": getpass.getuser(),
            "host": socket.gethostname(),
            "command": command,
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire(fd: int, paths: Paths, wait: float) -> None:
    deadline = time.monotonic() + wait
    announced = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            holder = read_holder(paths) or {}
            if time.monotonic() >= deadline:
                raise LockHeld(
                    f"another deploy holds the lock: {describe_holder(holder)}",
                    hint="wait for it to finish, or pass --wait SECONDS",
                ) from None
            if not announced:
                print(f"waiting for the deploy lock held by {describe_holder(holder)}", file=sys.stderr)
                announced = True
            time.sleep(0.2)


def read_holder(paths: Paths) -> dict | None:
    """The current holder, or None when nobody holds the lock (a stale file content is ignored)."""
    try:
        fd = os.open(paths.lock_file, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raw = os.pread(fd, 4096, 0).decode(errors="replace").strip()
            try:
                return json.loads(raw) if raw else {"pid": "?"}
            except json.JSONDecodeError:
                return {"pid": "?"}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
