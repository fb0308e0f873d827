"""The SQLite database's migration state, read directly, and online backups (DESIGN §6.2, §7)."""

from __future__ import annotations

import sqlite3
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


def applied(db: Path) -> set[Migration]:
    """Migrations recorded in django_migrations; empty when the database does not exist yet."""
    if not db.exists():
        return set()
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            rows = conn.execute("SELECT app, name FROM django_migrations").fetchall()
        finally:
            conn.close()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return set()
        raise OperationFailed(f"cannot read migrations from {db}: {exc}") from None
    return {(app, name) for app, name in rows}


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
    """Copy the live database with SQLite's online backup API (safe while the site writes)."""
    if not db.exists():
        return None
    backups.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = backups / f"{db.stem}-{stamp}-{label}.sqlite3"
    try:
        src = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
            src.close()
    except sqlite3.Error as exc:
        target.unlink(missing_ok=True)
        raise OperationFailed(f"backup of {db} failed: {exc}") from None
    target.chmod(0o600)
    return target
