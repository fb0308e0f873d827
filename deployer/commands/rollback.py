"""`deployer rollback [--to SHA]`: the previous live release, one relink (docs/design.md §7)."""

from __future__ import annotations

import time

from deployer import envfile, history, releases
from deployer.commands.activate import STEPS, go_live
from deployer.config import Config
from deployer.errors import BadInput, OperationFailed
from deployer.paths import Paths, current_sha
from deployer.steps import Progress, say


def rollback(config: Config, paths: Paths, to: str | None, migrate: bool, force: bool) -> str:
    started = time.monotonic()
    entries = history.read(paths)
    live = current_sha(paths)
    if live is None and paths.current.is_symlink():
        # `current` dangles or points outside releases/: roll back from what history says was
        # live, never "back" to that same release.
        live = history.last_live(entries)
        if live is None and to is None:
            raise OperationFailed(
                f"{paths.current} does not point at a release and history records none",
                hint="name a release with `deployer rollback --to SHA`",
            )
        if live:
            say(f"current does not point at a release; rolling back from {live[:12]}, the last one recorded live")
    if to is not None:
        if not to:
            raise BadInput("--to needs a sha or sha prefix, got an empty string")
        target = releases.find(paths, to)
    else:
        target = history.rollback_target(entries, live)
        if target is None:
            raise OperationFailed("no release to roll back to: history has no earlier live release", hint="name one with --to SHA")
    if target == current_sha(paths):
        say(f"release {target[:12]} is already live; nothing to do")
        return target
    env_values = envfile.load(config.env_file, config.required_env)
    progress = Progress(STEPS)
    with progress.step(f"verify {target[:12]}"):
        meta = releases.require_complete(paths, target, config.shared_dirs)
    # The same migrate-if-pending path as activate: migrations the database has but the target
    # does not know are refused (or unapplied with the live code, --migrate, or kept, --force);
    # the target's own pending migrations are applied after a backup.
    go_live(
        config, paths, progress, target, meta, current_sha(paths), "rollback", started, env_values,
        schema_step="check migrations", unapply_with=live if migrate else None, force=force,
    )
    return target


def main(config: Config, paths: Paths, to: str | None, migrate: bool, force: bool) -> None:
    rollback(config, paths, to, migrate, force)
