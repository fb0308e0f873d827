"""The deploy lock: flock(2) on state/deploy.lock (docs/design.md §3).

The kernel drops a flock when its holder dies, so a `kill -9` never leaves a stale lock; the
holder's description written into the file is only information for the next caller.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
import os
import select
import signal
import socket
import sys
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from deployer.errors import BadInput, LockHeld
from deployer.paths import Paths


def describe_holder(holder: dict) -> str:
    return (
        f"pid {holder.get('pid')} ({holder.get('user')}@{holder.get('host')}, "
        f"'{holder.get('command')}', since {holder.get('since')})"
    )


TOKEN_TIMEOUT = 60.0  # the orchestrator writes the token as soon as the command starts
_MAX_TOKEN = 200
_TOKEN_CHARACTERS = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_.")


def read_token(fd: int, timeout: float = TOKEN_TIMEOUT) -> str:
    """An orchestrator's lock token: the first line on stdin, never in argv, where any user of
    the server could read it (/proc/PID/cmdline). Read one byte at a time, so that nothing after
    it (the heartbeat, the barrier's words: deployer/gate.py) is taken from the next reader."""
    line = bytearray()
    deadline = time.monotonic() + timeout
    while not line.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise BadInput(f"no lock token on stdin within {timeout:g}s",
                           hint="--held-lock and hold-lock read the orchestrator's token from the first line of stdin")
        byte = os.read(fd, 1)
        if not byte:
            break
        line += byte
        if len(line) > _MAX_TOKEN + 1:
            break
    token = line.decode("ascii", errors="replace").removesuffix("\n")
    if not token or len(token) > _MAX_TOKEN or not set(token) <= _TOKEN_CHARACTERS:
        raise BadInput("the first line on stdin is not a lock token",  # never shown: it may be one
                       hint="--held-lock and hold-lock read the orchestrator's token from the first line of stdin")
    return token


def token_id(token: str) -> str:
    """What the lock file records of an orchestrator's token: a digest, never the token."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]


@contextmanager
def deploy_lock(paths: Paths, command: str, wait: float = 0, orchestrator_token: str | None = None) -> Iterator[None]:
    """Hold the deploy lock. With `orchestrator_token`, the lock is held for an orchestrator
    (docs/design.md §13): commands it runs with the same token work under it (`held_lock`)."""
    paths.ensure_state()
    fd = os.open(paths.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        _acquire(fd, paths, wait)
        holder = {
            "pid": os.getpid(),
            "user": getpass.getuser(),
            "host": socket.gethostname(),
            "command": command,
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        if orchestrator_token:
            holder["orchestrator"] = token_id(orchestrator_token)
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        try:
            # Named as the holder first: a command that finds the lock held while this waits
            # (up to ORPHAN_WAIT) can say who holds it.
            _wait_for_orphans(paths)
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextmanager
def held_lock(paths: Paths, token: str) -> Iterator[None]:
    """Run under a lock an orchestrator already holds on this server (its `hold-lock` process,
    which lives as long as the orchestrator's SSH connection). Anything else is exit 3."""
    holder = read_holder(paths)
    if not holder or holder.get("orchestrator") != token_id(token):
        raise LockHeld(
            "the orchestrator's lock on this server is not held"
            + (f" (held by {describe_holder(holder)})" if holder else ""),
            hint="the orchestrator's connection to this server was lost; run the command again",
        )
    # While this runs it holds the orchestrated lock: when the orchestrator's lock goes, the next
    # deploy waits here until this command has unwound (see _wait_for_orphans).
    fd = os.open(_orchestrated_file(paths), os.O_RDWR | os.O_CREAT, 0o600)
    gone = threading.Event()
    done = threading.Event()
    watcher = threading.Thread(target=_watch_held_lock, args=(paths, token, gone, done), daemon=True)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        watcher.start()
        yield
    finally:
        done.set()
        if watcher.is_alive():
            watcher.join()
        os.close(fd)


ORPHAN_WAIT = 120.0


def _orchestrated_file(paths: Paths) -> Path:
    return paths.state / "orchestrated.lock"


def _wait_for_orphans(paths: Paths, wait: float = ORPHAN_WAIT) -> None:
    """A command an orchestrator ran may outlive that orchestrator's lock by the time it takes
    to unwind (it is stopped when the lock goes). The lock's new holder waits for it first."""
    fd = os.open(_orchestrated_file(paths), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + wait
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockHeld("a command of an orchestrator whose connection dropped is still stopping",
                                   hint="wait a minute and run the command again") from None
                if not announced:
                    print("waiting for a command of a disconnected orchestrator to stop", file=sys.stderr)
                    announced = True
                time.sleep(0.1)
    finally:
        os.close(fd)


HELD_LOCK_POLL = 0.5
HEARTBEAT_TIMEOUT = 10.0  # the orchestrator beats every 2 s (deployer/remote.py)


def wait_for_heartbeats(fd: int, timeout: float = HEARTBEAT_TIMEOUT) -> None:
    """Return when `fd` closes, or stays silent for `timeout` seconds. An SSH channel whose
    network is gone never closes by itself (sshd notices a dead client only after minutes)."""
    while True:
        readable, _, _ = select.select([fd], [], [], timeout)
        if not readable or not os.read(fd, 4096):
            return


def _watch_held_lock(paths: Paths, token: str, gone: threading.Event, done: threading.Event) -> None:
    """When the orchestrator's lock goes (its SSH connection dropped), stop this command the way
    SIGTERM stops a deploy: it unwinds and puts back what it changed, rather than going on
    unlocked beside whatever takes the lock next."""
    while not done.wait(HELD_LOCK_POLL):
        holder = read_holder(paths)
        if not holder or holder.get("orchestrator") != token_id(token):
            gone.set()
            os.kill(os.getpid(), signal.SIGTERM)
            return


def _acquire(fd: int, paths: Paths, wait: float) -> None:
    deadline = time.monotonic() + wait
    announced = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            holder = read_holder(paths) or {"pid": "?"}
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
    """The current holder, or None when nobody holds the lock. Probes without locking: a probe
    that took the lock, even shared and for a moment, would make a real deploy exit 3."""
    try:
        st = os.stat(paths.lock_file)
        raw = paths.lock_file.read_bytes()[:4096]
    except OSError:
        return None
    lockers = _flock_holders(st)
    if lockers is not None and not lockers:
        return None  # the file may still describe a holder that was killed: stale
    try:
        holder = json.loads(raw.decode("utf-8", errors="replace")) if raw.strip() else None
    except ValueError:
        holder = None
    if not isinstance(holder, dict):
        if lockers is None:
            return None  # no /proc/locks and no description: nobody we can name
        # Taken a moment ago, its description not written yet.
        holder = {"pid": lockers[0]}
    return holder


def _flock_holders(st: os.stat_result) -> list[int] | None:
    """Pids holding a flock on the file, from /proc/locks; None where that cannot be read
    (then a written description alone says the lock is held)."""
    wanted = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    pids = []
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 4242 fe:00:2146714 0 EOF"; waiters are "1: -> FLOCK ..."
        if len(fields) < 6 or fields[1] != "FLOCK":
            continue
        try:
            major, minor, inode = fields[5].split(":")
            if (int(major, 16), int(minor, 16), int(inode)) == wanted:
                pids.append(int(fields[4]))
        except ValueError:
            continue
    return pids
