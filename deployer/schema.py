"""Bringing the database to a release's migration graph, before a switch and on a switch-back
(docs/design.md §6.2, §7).

One path for activate, rollback and the switch-back: migrations the database has applied but the
release does not contain are "ahead" (they must be unapplied by code that knows them, or the
operator must say --force); leaves of the release's graph the database lacks are "pending" (the
release's own code applies them). A backup is taken before the first change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from deployer import django, migrations, releases
from deployer.config import Config
from deployer.errors import OperationFailed
from deployer.paths import Paths


def names(found: list[migrations.Migration]) -> str:
    return ", ".join(f"{app}.{name}" for app, name in found)


def matches(meta: dict) -> bool:
    """Whether the database is exactly at the release's graph: nothing pending, nothing ahead.
    True for databases the deployer cannot read itself (not SQLite): nothing to restore."""
    db = migrations.database_path(meta)
    if db is None:
        return True
    done = migrations.applied(db)
    return not migrations.unknown_to(meta, done) and not migrations.pending(meta, done)


def bring_to(
    config: Config,
    paths: Paths,
    env_values: dict[str, str],
    sha: str,
    meta: dict,
    *,
    unapply_with: str | None,
    force: bool = False,
    label: str,
    note: Callable[[str], None],
) -> str | None:
    """Make the database match release `sha`'s graph. `unapply_with` names the release whose
    code unapplies migrations the target does not know; None refuses them (unless `force`).
    Returns the backup taken, if any. Nothing is changed when it refuses."""
    db = migrations.database_path(meta)
    env = django.environment(config, env_values, PYTHONDONTWRITEBYTECODE="1")
    if db is None:
        note("not SQLite: `migrate` decides what is pending")
        _migrate(config, paths, env, sha, None)
        return None
    done = migrations.applied(db)
    ahead = migrations.unknown_to(meta, done)
    pending = migrations.pending(meta, done)
    if ahead and force:
        note(f"--force: leaving applied migrations {sha[:12]} does not contain: {names(ahead)}")
        ahead = []
    if ahead:
        helper = _code_that_knows(paths, ahead, unapply_with)
        if helper is None:
            raise OperationFailed(
                f"the database has migrations that {sha[:12]} does not contain: {names(ahead)}",
                hint=f"`deployer rollback --to {sha[:12]} --migrate` unapplies them first (a backup is taken), "
                "`--force` ignores them",
            )
    if not ahead and not pending:
        note("the database already matches the release's migrations")
        return None
    backup = migrations.backup(db, paths.backups, label) if done else None
    if backup:
        note(f"database backed up to {backup}")
    if ahead:
        for app, target in migrations.unapply_targets(meta, ahead):
            note(f"unapplying {app} back to {target} with {helper[:12]}'s code")
            _run(config, paths, env, helper, backup, "migrate", app, target, "--noinput")
    if pending:
        note(f"applying {names(pending)} with {sha[:12]}'s code")
        _migrate(config, paths, env, sha, backup)
    return str(backup) if backup else None


def _code_that_knows(paths: Paths, ahead: list[migrations.Migration], candidate: str | None) -> str | None:
    if candidate is None:
        return None
    meta = releases.read_metadata(paths.release(candidate)) or {}
    known = {tuple(node) for node in meta.get("migrations", {}).get("nodes", [])}
    if not set(ahead) <= known:
        raise OperationFailed(
            f"no release here can unapply {names(sorted(set(ahead) - known))}: {candidate[:12]} does not contain them",
            hint="restore a database backup from state/backups/ with the service stopped (docs/server-guide.md)",
        )
    return candidate


def _migrate(config: Config, paths: Paths, env: dict[str, str], sha: str, backup: Path | None) -> None:
    _run(config, paths, env, sha, backup, "migrate", "--noinput")


def _run(config: Config, paths: Paths, env: dict[str, str], sha: str, backup: Path | None, *args: str) -> None:
    try:
        django.manage(config, paths.release(sha), env, *args, what=" ".join(args[:3]))
    except OperationFailed as exc:
        exc.hint = f"the backup taken before it is {backup}" if backup else exc.hint
        raise
