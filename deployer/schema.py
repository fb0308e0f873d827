"""Bringing the database to a release's migration graph, before a switch and on a switch-back
(docs/design.md §6.2, §7).

One path for activate, rollback and the switch-back: migrations the database has applied but the
release does not contain are "ahead" (they must be unapplied by code that knows them, or the
operator must say --force); leaves of the release's graph the database lacks are "pending" (the
release's own code applies them). A backup is taken before the first change.

The order keeps the live code and the schema compatible under a kill at any instant: pending
migrations are applied *before* `current` moves (the old code runs on an added schema), ahead
ones are unapplied *after* it moved (the newer code, still running until the restart, has its
tables until then, and a kill leaves `current` on the release that matches the smaller schema).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from deployer import database as database_
from deployer import django, migrations, releases
from deployer.config import Config
from deployer.errors import OperationFailed
from deployer.paths import Paths

Note = Callable[[str], None]


@dataclass
class Plan:
    """What it takes to bring the database to release `sha`'s graph."""

    sha: str
    meta: dict
    database: database_.Database
    ahead: list[migrations.Migration] = field(default_factory=list)
    pending: list[migrations.Migration] = field(default_factory=list)
    helper: str | None = None  # the release whose code unapplies `ahead`
    backup: str | None = None
    kept: list[migrations.Migration] = field(default_factory=list)  # ahead, left in place by --force

    @property
    def applied(self) -> set[migrations.Migration]:
        return self.database.applied

    @property
    def changes(self) -> bool:
        return bool(self.ahead or self.pending)

    @property
    def to_apply(self) -> list[migrations.Migration]:
        """Every migration of the release's graph the database lacks (`migrate` applies them
        all to reach the pending leaves)."""
        return migrations.missing(self.meta, self.applied) if self.pending else []

    @property
    def needs_backup(self) -> bool:
        """A backup before the first change; none for an empty database (a first deploy)."""
        return self.changes and self.database.has_data()


def names(found: list[migrations.Migration]) -> str:
    return ", ".join(f"{app}.{name}" for app, name in found)


def summary(found: list[migrations.Migration], most: int = 4) -> str:
    """A few migrations by name; more as a count and their apps (a first deploy applies hundreds)."""
    if len(found) <= most:
        return names(found)
    apps = sorted({app for app, _ in found})
    return f"{len(found)} migrations of {len(apps)} app(s): {', '.join(apps)}"


def plan(
    config: Config, paths: Paths, env_values: dict[str, str], sha: str, meta: dict,
    *, unapply_with: str | None, force: bool, note: Note, code: str | None = None,
) -> Plan:
    """Read the database and decide. `unapply_with` names the release whose code may unapply
    migrations the target does not know; None refuses them (unless `force`). `code` is the
    release whose Django reads a non-SQLite database (default: the target). Changes nothing."""
    database = database_.read(config, paths, env_values, meta, code or sha)
    done = database.applied
    result = Plan(sha, meta, database, ahead=migrations.unknown_to(meta, done), pending=migrations.pending(meta, done))
    if result.ahead and force:
        note(f"--force: leaving applied migrations {sha[:12]} does not contain: {names(result.ahead)}")
        result.kept, result.ahead = result.ahead, []
    if result.ahead:
        result.helper = _code_that_knows(paths, result.ahead, unapply_with)
        if result.helper is None:
            raise OperationFailed(
                f"the database has migrations that {sha[:12]} does not contain: {names(result.ahead)}",
                hint=f"`deployer rollback --to {sha[:12]} --migrate` unapplies them first (a backup is taken), "
                "`--force` ignores them",
            )
    if not result.changes:
        note("the database already matches the release's migrations")
    return result


def back_up(config: Config, paths: Paths, plan_: Plan, label: str, note: Note) -> None:
    """A backup before the first change (none for an empty database: a first deploy)."""
    if not plan_.needs_backup:
        return
    backup = database_.backup(config, plan_.database, paths.backups, label)
    if backup:
        plan_.backup = str(backup)
        note(f"database backed up to {backup}")


def apply_pending(config: Config, paths: Paths, env_values: dict[str, str], plan_: Plan, note: Note) -> None:
    if plan_.pending:
        note(f"applying {summary(plan_.to_apply)} with {plan_.sha[:12]}'s code")
        _run(config, paths, env_values, plan_.sha, plan_.backup, "migrate", "--noinput")


def unapply_ahead(config: Config, paths: Paths, env_values: dict[str, str], plan_: Plan, note: Note) -> None:
    for app, target in migrations.unapply_targets(plan_.meta, plan_.ahead):
        note(f"unapplying {app} back to {target} with {plan_.helper[:12]}'s code")
        _run(config, paths, env_values, plan_.helper, plan_.backup, "migrate", app, target, "--noinput")


def bring_to(
    config: Config, paths: Paths, env_values: dict[str, str], sha: str, meta: dict,
    *, unapply_with: str | None, label: str, note: Note, before_change: Callable[[], None] | None = None,
) -> bool:
    """All of it at once (a switch-back, where `current` already moved). Returns whether the
    database needed a change; it reads the database once when it matches already. `before_change`
    runs first when there is a change to make (the migrations server waits for the others, §13)."""
    plan_ = plan(config, paths, env_values, sha, meta, unapply_with=unapply_with, force=False, note=lambda _: None)
    if not plan_.changes:
        return False
    if before_change is not None:
        before_change()
    back_up(config, paths, plan_, label, note)
    unapply_ahead(config, paths, env_values, plan_, note)
    apply_pending(config, paths, env_values, plan_, note)
    return True


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


def _run(config: Config, paths: Paths, env_values: dict[str, str], sha: str, backup: str | None, *args: str) -> None:
    """One migrate (forwards or an unapply), bounded by django.migrate_timeout: one that runs
    past it is killed and fails like any other failed migrate, so the put-back runs."""
    env = django.environment(config, env_values, PYTHONDONTWRITEBYTECODE="1")
    try:
        django.manage(config, paths.release(sha), env, *args, what=" ".join(args[:3]),
                      timeout=config.django.migrate_timeout)
    except OperationFailed as exc:
        exc.hint = f"the backup taken before it is {backup}" if backup else exc.hint
        raise
