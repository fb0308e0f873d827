"""The SQLite database's migration state, read directly, and online backups (docs/design.md §6.2, §7)."""

from __future__ import annotations

import os
import sqlite3
import stat
from datetime import datetime, timezone
from pathlib import Path

from deployer.errors import OperationFailed

Migration = tuple[str, str]


def database_path(meta: dict) -> Path | None:
    """The SQLite file a release uses, as recorded at build time (None if not SQLite)."""
    db = meta.get("database") or {}
    if "sqlite3" not in db.get("engine", ""):
        return None
    return Path(db["name"])


def exists(db: Path) -> bool:
    """Whether the database file exists; refuses anything but a regular file. shared/db is
    writable by the service user, who must not be able to point the deploy user's backup and
    migrate at another file through a symlink."""
    try:
        st = os.lstat(db)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode):
        raise OperationFailed(
            f"the database {db} is not a regular file (a symlink or something else); refusing to open it",
            hint="inspect shared/db: only the SQLite file and its -wal/-shm files belong there",
        )
    return True


def _read_only_uri(db: Path) -> str:
    return f"{db.as_uri()}?mode=ro"


def applied(db: Path) -> set[Migration]:
    """Migrations recorded in django_migrations; empty when the database does not exist yet."""
    if not exists(db):
        return set()
    try:
        conn = sqlite3.connect(_read_only_uri(db), uri=True, timeout=10)
        try:
            rows = conn.execute("SELECT app, name FROM django_migrations").fetchall()
        finally:
            conn.close()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return set()
        raise OperationFailed(f"cannot read migrations from {db}: {exc}") from None
    except sqlite3.DatabaseError as exc:
        raise OperationFailed(f"cannot read migrations from {db}: {exc}", hint="restore it from state/backups/") from None
    return {(str(app), str(name)) for app, name in rows}


def pending(meta: dict, done: set[Migration]) -> list[Migration]:
    """Leaves of the release's graph that the database has not applied."""
    return [tuple(leaf) for leaf in meta.get("migrations", {}).get("leaves", []) if tuple(leaf) not in done]


def unknown_to(meta: dict, done: set[Migration]) -> list[Migration]:
    """Applied migrations that the release's code does not contain (the database is ahead of it)."""
    known = {tuple(node) for node in meta.get("migrations", {}).get("nodes", [])}
    return sorted(m for m in done if m not in known)


def unapply_targets(meta: dict, ahead: list[Migration]) -> list[tuple[str, str]]:
    """`migrate <app> <name>` arguments that bring each app back to the release's own leaf."""
    leaves: dict[str, str] = {}
    for app, name in meta.get("migrations", {}).get("leaves", []):
        leaves[app] = name
    return [(app, leaves.get(app, "zero")) for app in sorted({app for app, _ in ahead})]


def backup(db: Path, backups: Path, label: str) -> Path | None:
    """Copy the live database with SQLite's online backup API (safe while the site writes).
    The copy is made under a temporary name created 0600, then renamed: a kill never leaves a
    partial file under a backup's name."""
    if not exists(db):
        return None
    backups.mkdir(mode=0o700, parents=True, exist_ok=True)
    for stale in backups.glob(f".*{PARTIAL}"):  # left by a run killed mid-copy
        stale.unlink(missing_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = _free_name(backups, f"{db.stem}-{stamp}-{label}")
    partial = backups / f".{target.name}{PARTIAL}"
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600))
    try:
        src = sqlite3.connect(_read_only_uri(db), uri=True, timeout=30)
        dst = sqlite3.connect(partial)
        try:
            src.backup(dst)
        finally:
            dst.close()
            src.close()
        os.rename(partial, target)
    except sqlite3.Error as exc:
        partial.unlink(missing_ok=True)
        raise OperationFailed(f"backup of {db} failed: {exc}") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return target


PARTIAL = ".partial"


def _free_name(directory: Path, stem: str) -> Path:
    for attempt in range(1, 100):
        target = directory / (f"{stem}.sqlite3" if attempt == 1 else f"{stem}-{attempt}.sqlite3")
        if not target.exists():
            return target
    raise OperationFailed(f"cannot find a free backup name for {stem} in {directory}")
