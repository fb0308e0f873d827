"""`deployer rollback [--to SHA]`: the previous live release, one relink (DESIGN §7)."""

from __future__ import annotations

import time

from deployer import django, envfile, history, migrations, releases
from deployer.commands.activate import go_live
from deployer.config import Config
from deployer.errors import OperationFailed
from deployer.paths import Paths, current_sha
from deployer.steps import Progress, say

STEPS = 6


def rollback(config: Config, paths: Paths, to: str | None, migrate: bool, force: bool) -> str:
    started = time.monotonic()
    live = current_sha(paths)
    if to:
        target = releases.find(paths, to)
    else:
        target = history.rollback_target(history.read(paths), live)
        if target is None:
            raise OperationFailed("no release to roll back to: history has no earlier live release", hint="name one with --to SHA")
    if target == live:
        say(f"release {target[:12]} is already live; nothing to do")
        return target
    progress = Progress(STEPS)
    with progress.step(f"verify {target[:12]}"):
        meta = releases.require_complete(paths, target, config.shared_dirs)
    with progress.step("check migrations"):
        backup = _reconcile_migrations(config, paths, progress, live, target, meta, migrate, force)
    go_live(config, paths, progress, target, live, "rollback", started, backup=backup)
    return target


def _reconcile_migrations(config, paths, progress, live, target, meta, migrate, force) -> str | None:
    """Refuse when the database has migrations the target does not know, unless --migrate
    (unapply them with the live release's code, after a backup) or --force."""
    db = migrations.database_path(meta)
    ahead = migrations.unknown_to(meta, migrations.applied(db)) if db else []
    if not ahead:
        progress.note("the database has nothing the target does not know")
        return None
    names = ", ".join(f"{app}.{name}" for app, name in ahead)
    if force:
        progress.note(f"--force: leaving applied migrations the target does not know: {names}")
        return None
    if not migrate:
        raise OperationFailed(
            f"the database has migrations that {target[:12]} does not contain: {names}",
            hint="`deployer rollback --migrate` unapplies them first (a backup is taken), `--force` ignores them",
        )
    if live is None:
        raise OperationFailed("--migrate needs a live release whose code can unapply the migrations")
    backup = migrations.backup(db, paths.backups, f"before-rollback-{target[:12]}")
    if backup:
        progress.note(f"database backed up to {backup}")
    env = django.environment(config, envfile.load(config.env_file, config.required_env), PYTHONDONTWRITEBYTECODE="1")
    for app, name in migrations.unapply_targets(meta, ahead):
        progress.note(f"unapplying {app} back to {name} with {live[:12]}'s code")
        django.manage(config, paths.release(live), env, "migrate", app, name, "--noinput", what=f"migrate {app} {name}")
    return str(backup) if backup else None


def main(config: Config, paths: Paths, to: str | None, migrate: bool, force: bool) -> None:
    rollback(config, paths, to, migrate, force)
