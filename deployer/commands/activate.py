"""`deployer activate <sha-or-prefix>`: make a built release live (DESIGN §6)."""

from __future__ import annotations

import time

from deployer import django, envfile, history, migrations, releases, service, smoke, switch
from deployer.config import Config
from deployer.errors import DeployError, OperationFailed
from deployer.paths import Paths, current_sha
from deployer.steps import Progress, say

STEPS = 6


def activate(config: Config, paths: Paths, sha_or_prefix: str, action: str = "activate") -> str:
    """Activate a built release (caller holds the deploy lock). Returns its sha."""
    sha = releases.find(paths, sha_or_prefix)
    env_values = envfile.load(config.env_file, config.required_env)
    started = time.monotonic()
    progress = Progress(STEPS)
    with progress.step("verify release"):
        meta = releases.require_complete(paths, sha, config.shared_dirs)
    previous = current_sha(paths)
    if previous == sha:
        recorded = history.last_live(history.read(paths))
        if recorded == sha:
            say(f"release {sha[:12]} is already live; nothing to do")
            return sha
        # A run killed between the switch and its history line: finish what it started.
        say(f"current already points at {sha[:12]}, but that activation never finished; finishing it")
        previous = recorded
    with progress.step("migrate"):
        backup = migrate_if_pending(config, paths, progress, sha, meta, env_values)
    go_live(config, paths, progress, sha, previous, action, started, backup=backup)
    return sha


def migrate_if_pending(
    config: Config, paths: Paths, progress: Progress, sha: str, meta: dict, env_values: dict
) -> str | None:
    """Back up the database and migrate, only when the release has unapplied migrations."""
    db = migrations.database_path(meta)
    done = migrations.applied(db) if db else set()
    todo = migrations.pending(meta, done) if db else ["(not SQLite: migrate decides)"]
    if not todo:
        progress.note("no pending migrations")
        return None
    # An empty database (a first deploy) has nothing worth a backup.
    backup = migrations.backup(db, paths.backups, f"before-{sha[:12]}") if db and done else None
    if backup:
        progress.note(f"database backed up to {backup}")
    env = django.environment(config, env_values, PYTHONDONTWRITEBYTECODE="1")
    try:
        django.manage(config, paths.release(sha), env, "migrate", "--noinput", what="migrate")
    except OperationFailed as exc:
        exc.hint = f"the live release is untouched; the backup is {backup}" if backup else "the live release is untouched"
        raise
    return str(backup) if backup else None


def go_live(
    config: Config,
    paths: Paths,
    progress: Progress,
    sha: str,
    previous: str | None,
    action: str,
    started: float,
    **extra,
) -> None:
    """Switch, restart, smoke test; on failure switch back to `previous`. Records history."""
    with progress.step(f"switch current to {sha[:12]}"):
        switch.point_current_at(paths, sha)
    try:
        with progress.step("restart service"):
            service.restart(config)
        with progress.step("smoke test"):
            smoke.run(config.smoke, sha, paths.release(sha))
    except DeployError as failure:
        _switch_back(config, paths, sha, previous, action, failure, started, {"steps": dict(progress.durations), **extra})
        raise
    with progress.step("record history"):
        history.append(
            paths, action, previous, sha, history.OK,
            seconds=round(time.monotonic() - started, 2), steps=dict(progress.durations), **extra,
        )
    say(f"{sha[:12]} is live ({action} took {time.monotonic() - started:.1f}s)")


def _switch_back(config, paths, sha, previous, action, failure, started, extra) -> None:
    if previous is None:
        say(f"    no release was live before {sha[:12]}; removing current")
        switch.remove_current(paths)
        back = "nothing was live before"
    else:
        say(f"    switching back to {previous[:12]}")
        switch.point_current_at(paths, previous)
        try:
            service.restart(config)
            smoke.run(config.smoke, previous, paths.release(previous))
            back = f"{previous[:12]} is live again"
        except DeployError as exc:
            back = f"{previous[:12]} is back in current but did not pass its smoke test either: {exc.message}"
    history.append(
        paths, action, previous, sha, history.FAILED_SMOKE,
        reason=failure.message, seconds=round(time.monotonic() - started, 2), **extra,
    )
    failure.hint = f"{back}; {sha[:12]} is marked failed-smoke"


def main(config: Config, paths: Paths, sha_or_prefix: str) -> None:
    activate(config, paths, sha_or_prefix)
