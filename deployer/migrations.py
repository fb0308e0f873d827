"""The SQLite database's migration state, read directly, and online backups; the migration graph
recorded in RELEASE.json (docs/design.md §6.2, §7). Other engines: deployer/database.py."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import stat
import tempfile
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
    """Migrations recorded in django_migrations; empty when the database does not exist yet.
    Reading leaves every file in shared/db/ as it was, byte for byte (see `_query`)."""
    if not exists(db):
        return set()
    try:
        rows = _query(db, "SELECT app, name FROM django_migrations")
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return set()
        raise OperationFailed(f"cannot read migrations from {db}: {exc}") from None
    except sqlite3.DatabaseError as exc:
        raise OperationFailed(f"cannot read migrations from {db}: {exc}", hint="restore it from state/backups/") from None
    return {(str(app), str(name)) for app, name in rows}


SIDECARS = ("-wal", "-journal")


def _query(db: Path, sql: str, attempts: int = 5) -> list[tuple]:
    """Run one read without touching the database's files. A `mode=ro` open of a WAL database
    creates -wal and -shm (and cannot remove them) and writes read marks into -shm. So: when no
    -wal or -journal holds data, every committed row is in the main file and `immutable=1` reads
    it with no locks and no side files. Otherwise the main file and its journal are copied to a
    temp dir outside deploy_to and the copy is read (SQLite recovers the WAL into the copy);
    a copy torn by a concurrent write is detected by the files' stat changing, and retried."""
    for _ in range(attempts):
        busy = [db.with_name(db.name + s) for s in SIDECARS if _size(db.with_name(db.name + s))]
        if not busy:
            try:
                return _read(f"{db.as_uri()}?mode=ro&immutable=1", sql)
            except sqlite3.DatabaseError:
                if not any(_size(db.with_name(db.name + s)) for s in SIDECARS):
                    raise
                continue  # a writer started meanwhile: read its journal too
        with tempfile.TemporaryDirectory(prefix="deployer-db-read-") as tmp:
            before = [_stamp(path) for path in (db, *busy)]
            for path in (db, *busy):
                shutil.copyfile(path, Path(tmp) / path.name)
            if [_stamp(path) for path in (db, *busy)] != before:
                continue
            return _read(str(Path(tmp) / db.name), sql)
    raise sqlite3.OperationalError(f"the database kept changing while it was read ({attempts} attempts)")


def _read(target: str, sql: str) -> list[tuple]:
    conn = sqlite3.connect(target, uri=target.startswith("file:"), timeout=10)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _size(path: Path) -> int:
    try:
        return os.lstat(path).st_size
    except FileNotFoundError:
        return 0


def _stamp(path: Path) -> tuple[int, int, int]:
    st = os.lstat(path)
    return st.st_size, st.st_mtime_ns, st.st_ino


def pending(meta: dict, done: set[Migration]) -> list[Migration]:
    """Leaves of the release's graph that the database has not applied."""
    return [tuple(leaf) for leaf in meta.get("migrations", {}).get("leaves", []) if tuple(leaf) not in done]


def missing(meta: dict, done: set[Migration]) -> list[Migration]:
    """Every node of the release's graph that the database has not applied."""
    return sorted(tuple(node) for node in meta.get("migrations", {}).get("nodes", []) if tuple(node) not in done)


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
    remove_partials(backups)
    target = free_name(backups, backup_stem(str(db), label), SQLITE_SUFFIX)
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
SQLITE_SUFFIX = ".sqlite3"


def remove_partials(backups: Path) -> None:
    """Partial copies left by a run killed mid-backup."""
    for stale in backups.glob(f".*{PARTIAL}"):
        stale.unlink(missing_ok=True)


def backup_stem(name: str, label: str, when: datetime | None = None) -> str:
    """<database>-<UTC time>-<label>, before the suffix (and -2, -3... if taken). `name` is the
    SQLite file or the PostgreSQL database name."""
    stamp = (when or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    base = Path(name).stem if name.endswith(SQLITE_SUFFIX) or "/" in name else name
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", base)[:64] or "database"
    return f"{safe}-{stamp}-{label}"


def free_name(directory: Path, stem: str, suffix: str) -> Path:
    for attempt in range(1, 100):
        target = directory / (f"{stem}{suffix}" if attempt == 1 else f"{stem}-{attempt}{suffix}")
        if not target.exists():
            return target
    raise OperationFailed(f"cannot find a free backup name for {stem} in {directory}")
