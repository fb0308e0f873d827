"""`deployer rollback [--to SHA]`: the previous live release, one relink (docs/design.md §7)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from deployer import envfile, history, hooks, preflight, releases, underway
from deployer.commands.activate import go_live, hook_steps, step_count
from deployer.config import Config
from deployer.errors import OperationFailed
from deployer.gate import Gate
from deployer.paths import Paths, current_sha, describe_current
from deployer.steps import Progress, say


@dataclass
class Choice:
    """What a rollback goes to, decided from history and `current` (shared with --plan)."""

    target: str
    rolled_from: str | None  # whose code knows the migrations the target does not
    previous: str | None  # recorded as `from` in history
    already_live: bool  # nothing to do
    finishing: bool  # a killed rollback whose switch already happened
    notes: list[str]
    killed: underway.Underway | None = None  # that killed run's record, when it left one


def choose(paths: Paths, to: str | None) -> Choice:
    entries = history.read(paths)
    recorded = history.last_live(entries)
    live = current_sha(paths)
    notes = []
    if live is None:
        # `current` is missing, dangles, or points outside releases/: roll back from what history
        # says was live to the release before it, never "back" to that same release.
        if to is None:
            _require_an_earlier_release(paths, entries, recorded)
        live = recorded
        if live is not None:
            notes.append(f"current {describe_current(paths)}; rolling back from {live[:12]}, the last release recorded live")
    target, rolled_from = _target(paths, entries, to, live, recorded)
    in_current = current_sha(paths)
    already_live = target == in_current and target == recorded
    finishing = target == in_current and not already_live
    previous = recorded if target == in_current else in_current
    return Choice(
        target, rolled_from, previous=previous, already_live=already_live, finishing=finishing, notes=notes,
        killed=underway.unfinished(paths, target, previous) if finishing else None,
    )


def schema_authority(choice: Choice, migrate: bool, force: bool) -> tuple[str | None, bool]:
    """(unapply_with, force) for go_live: this command's own --migrate or --force; with neither,
    when it finishes a killed run, what that run's operator authorised (deployer/underway.py)."""
    if migrate:
        return choice.rolled_from, False
    if force:
        return None, True
    killed = choice.killed
    return (killed.unapply_with, killed.force) if killed else (None, False)


def _require_an_earlier_release(paths: Paths, entries: list[dict], recorded: str | None) -> None:
    """With no release in `current`, re-activating the one history records as live would be a
    repair, not a rollback: refuse, say what is true, and name the repair (docs/design.md §7)."""
    state = f"current {describe_current(paths)}"
    if recorded is None:
        raise OperationFailed(f"{state} and history records no live release: there is nothing to roll back to",
                              hint="make a release live with `deployer activate SHA` (`deployer list` names them)")
    if history.rollback_target(entries, recorded) is None:
        raise OperationFailed(
            f"{state}; history records {recorded[:12]} as the last live release and none before it: "
            "there is nothing to roll back to",
            hint=f"`deployer activate {recorded[:12]}` puts {recorded[:12]} back in current (a repair), "
            "or name a release with `deployer rollback --to SHA`",
        )


def rollback(
    config: Config, paths: Paths, to: str | None, migrate: bool, force: bool,
    attempt: hooks.Attempt | None = None, gate: Gate | None = None,
) -> str:
    started = time.monotonic()
    choice = choose(paths, to)
    for line in choice.notes:
        say(line)
    target = choice.target
    if attempt is not None:
        attempt.sha = target
    if choice.already_live:
        say(f"release {target[:12]} is already live; nothing to do")
        if gate is not None:
            gate.tell("already-live")
        return target
    if choice.finishing:
        say(f"current already points at {target[:12]}, but {underway.that_run(choice.killed, 'that run')} never "
            "finished; finishing it")
    unapply_with, force = schema_authority(choice, migrate, force)
    env_values = envfile.load(config.env_file, config.required_env)
    progress = Progress(step_count(config) + (1 if unapply_with else 0) + hook_steps(config, "rollback"))
    with progress.step(f"verify {target[:12]}"):
        meta = releases.require_complete(paths, target, config.shared_dirs)
    # The same migrate-if-pending path as activate: migrations the database has but the target
    # does not know are refused (or unapplied with the code of the release rolled back from,
    # --migrate, or kept, --force); the target's own pending migrations are applied after a backup.
    go_live(
        config, paths, progress, target, meta, choice.previous, "rollback", started, env_values,
        unapply_with=unapply_with, force=force,
        gate=gate,
    )
    return target


def _target(paths: Paths, entries: list[dict], to: str | None, live: str | None, recorded: str | None) -> tuple[str, str | None]:
    """The release to roll back to, and the one rolled back from (whose code knows what to unapply).

    A run killed between its switch and its history line leaves `current` (live) ahead of the
    history (recorded). If current is where a rollback from the recorded release goes, that
    rollback is finished; otherwise current was an unfinished activation and the rollback goes
    back to the recorded release. Rerunning a killed rollback never walks one release further."""
    if to is not None:
        target = releases.find(paths, to)
        # --to naming the release a killed run left in current: the recorded live release's code
        # knows what that run was unapplying.
        return target, (recorded if target == live and recorded is not None else live)
    if live is not None and recorded is not None and live != recorded:
        if live == history.rollback_target(entries, recorded):
            return live, recorded
        return recorded, live
    target = history.rollback_target(entries, live)
    if target is None:
        raise OperationFailed("no release to roll back to: history has no earlier live release", hint="name one with --to SHA")
    return target, live


def main(config: Config, paths: Paths, to: str | None, migrate: bool, force: bool, gate: Gate | None = None) -> None:
    preflight.require_switchable(config, paths)
    with hooks.on_failure(config, paths, "rollback") as attempt:
        rollback(config, paths, to, migrate, force, attempt=attempt, gate=gate)
