"""`deployer activate <sha-or-prefix>`: make a built release live (docs/design.md §6)."""

from __future__ import annotations

import os
import time

from dataclasses import dataclass

from deployer import envfile, history, hooks, preflight, releases, schema, service, signals, smoke, standby, switch, underway
from deployer.config import Config
from deployer.gate import Gate, Overruled
from deployer.errors import DeployError, OperationFailed
from deployer.paths import Paths, current_sha, describe_current
from deployer.steps import Progress, say

STEPS = 6  # the restart strategy; standby starts and smoke-tests the idle colour first (+1)


def step_count(config: Config) -> int:
    return STEPS + (1 if config.service.standby else 0)

# How far go_live got: what a failure has to put back.
SCHEMA, PREPARE, SWITCH, RESTART, RECORD = "schema", "prepare", "switch", "restart", "record"


@dataclass(frozen=True)
class Colours:
    """Standby activation (docs/design.md §16): the colour that serves the new release, and the
    one that served before (None on a first deploy or the first standby run on a server)."""

    new: str
    old: str | None
    old_link: str | None = None  # what live.sock pointed at before (restart strategy: skinmenu.sock)


def activate(
    config: Config, paths: Paths, sha_or_prefix: str, action: str = "activate",
    attempt: hooks.Attempt | None = None, gate: Gate | None = None, built_in: float | None = None,
) -> str:
    """Activate a built release (caller holds the deploy lock). Returns its sha. `built_in`: the
    seconds a deploy spent building it first, counted in the time reported and recorded."""
    sha = releases.find(paths, sha_or_prefix)
    if attempt is not None:
        attempt.sha = sha
    env_values = envfile.load(config.env_file, config.required_env)
    started = time.monotonic()
    start = starting_point(paths, sha)
    action = start.action(action)
    progress = Progress(step_count(config) + hook_steps(config, action) + (1 if start.unapply_with else 0))
    if built_in is not None:
        progress.earlier["build"] = round(built_in, 3)
    with progress.step("verify release"):
        meta = releases.require_complete(paths, sha, config.shared_dirs)
    if start.already_live:
        say(f"release {sha[:12]} is already live; nothing to do")
        if gate is not None:
            gate.tell("already-live")
        return sha
    if start.finishing:
        say(f"current already points at {sha[:12]}, but {underway.that_run(start.killed, 'that activation')} "
            "never finished; finishing it")
    go_live(config, paths, progress, sha, meta, start.previous, action, started, env_values,
            unapply_with=start.unapply_with, force=start.force, gate=gate)
    return sha


def schema_step(action: str) -> str:
    """The name of the schema step: a rollback checks what the target's migrations need."""
    return "check migrations" if action == "rollback" else "migrate"


def hook_steps(config: Config, action: str) -> int:
    """The steps go_live's hooks add: before_switch, then after_live (after_rollback for a rollback)."""
    return hooks.count(config, "before_switch", hooks.after_live_point(action))


@dataclass(frozen=True)
class Start:
    """Where an activation of a release starts from (shared with --plan)."""

    previous: str | None  # the release live before
    already_live: bool = False  # nothing to do
    finishing: bool = False  # a killed run left `current` here before its history line
    killed: underway.Underway | None = None  # that run's record, when it left one

    def action(self, default: str) -> str:
        """A finished run is recorded as the run it finishes (a killed rollback stays a rollback)."""
        return self.killed.action if self.killed else default

    @property
    def unapply_with(self) -> str | None:
        return self.killed.unapply_with if self.killed else None

    @property
    def force(self) -> bool:
        return bool(self.killed and self.killed.force)


def starting_point(paths: Paths, sha: str) -> Start:
    previous = current_sha(paths)
    if previous != sha:
        return Start(previous)
    recorded = history.last_live(history.read(paths))
    if recorded == sha:
        return Start(previous, already_live=True)
    # A run killed between the switch and its history line: finish what it started.
    return Start(recorded, finishing=True, killed=underway.unfinished(paths, sha, recorded))


def go_live(
    config: Config,
    paths: Paths,
    progress: Progress,
    sha: str,
    meta: dict,
    previous: str | None,
    action: str,
    started: float,
    env_values: dict[str, str],
    *,
    unapply_with: str | None = None,
    force: bool = False,
    gate: Gate | None = None,
) -> None:
    """Migrate, switch, restart, smoke test, record. From the first change on, ANY failure
    (an unexpected exception, Ctrl-C, SIGTERM) puts back what was changed before it is reported:
    exit 1 always means the live site was left as it was or put back (docs/design.md §3).

    With a `gate` (an orchestrator drives several servers, §13), it also waits for the word to go
    live once prepared, and to keep the release once it is live; being overruled is a failure."""
    service.require_restart_program(config)
    owns_schema = gate is None or gate.owns_schema
    deploy_id = gate.deploy_id if gate is not None else None
    stage = SCHEMA
    plan = None
    colours: Colours | None = None
    link_before = _odd_link(paths)
    if gate is not None:
        progress.listeners.append(gate.step_started)

    def record_live(warning: str | None = None) -> None:
        with progress.step("record history"):
            history.append(
                paths, action, previous, sha, history.OK, backup=_backup_of(plan), deploy_id=deploy_id,
                seconds=_seconds(started, progress), steps={**progress.earlier, **progress.durations}, warning=warning,
            )
            underway.clear(paths)  # after the line: a kill in between leaves a record history overrides

    try:
        with progress.step(schema_step(action)):
            if owns_schema:
                plan = schema.plan(config, paths, env_values, sha, meta, unapply_with=unapply_with, force=force,
                                   note=progress.note)
                schema.back_up(config, paths, plan, f"before-{action}-{sha[:12]}", progress.note)
                schema.apply_pending(config, paths, env_values, plan, progress.note)
            else:
                progress.note("left to the migrations server (the orchestrator ran it there first)")
        if gate is not None:
            gate.tell("migrated")
        # Still SCHEMA: a failing command puts the schema back and leaves current alone.
        hooks.run(config, "before_switch", paths.release(sha), sha=sha, previous=previous, action=action,
                  env_values=env_values, progress=progress)
        if config.service.standby:
            stage = PREPARE
            colours = _prepare_standby(config, paths, progress, sha, previous)
            if gate is not None:
                gate.wait("prepared", "go", standby=True, previous=previous)
            _mark_underway(paths, action, previous, sha, unapply_with, force)
            stage = SWITCH
            with progress.step(f"switch current and socket to {colours.new}"):
                switch.point_current_at(paths, sha)
                standby.point_socket_at(config, paths, colours.new)
            if unapply_with and plan is not None:
                _unapply_after_switch(config, paths, env_values, plan, progress)
            stage = RESTART
        else:
            if gate is not None:
                stage = PREPARE
                gate.wait("prepared", "go", standby=False, previous=previous)
            _mark_underway(paths, action, previous, sha, unapply_with, force)
            stage = SWITCH
            with progress.step(f"switch current to {sha[:12]}"):
                switch.point_current_at(paths, sha)
            if unapply_with and plan is not None:
                _unapply_after_switch(config, paths, env_values, plan, progress)
            stage = RESTART
            with progress.step("restart service"):
                service.restart(config)
        with progress.step("smoke test"):
            smoke.run(config.smoke, sha, paths.release(sha))
        if gate is not None:
            gate.wait("live", "commit")
        else:
            stage = RECORD
            record_live()
    except BaseException as exc:
        failure = as_failure(exc)
        if gate is not None:
            gate.failure = failure.message
        record = {"action": action, "backup": _backup_of(plan), "deploy_id": deploy_id,
                  "seconds": _seconds(started, progress), "steps": {**progress.earlier, **progress.durations}}
        with signals.shielded():
            if stage == SCHEMA:
                _put_back_schema(config, paths, sha, previous, failure, env_values, gate)
            elif stage == PREPARE:
                _put_back_before_switch(config, paths, sha, previous, failure, env_values, _result_of(RESTART, exc),
                                        record, gate)
            else:
                _put_back_after_switch(config, paths, sha, previous, stage, failure, env_values,
                                       _result_of(stage, exc), record, colours, gate, link_before)
        if failure is exc:
            raise
        raise failure from exc
    # Committed: from here on nothing switches this server back (the others keep the release too).
    with signals.shielded():
        if gate is None:  # recorded already: leaving the standby can only warn
            if colours is not None:
                _leave_standby_or_warn(config, paths, colours, gate)
        else:  # the history line carries the warning, if any
            warning = _leave_standby_or_warn(config, paths, colours, gate) if colours is not None else None
            _record_committed(lambda: record_live(warning), sha)
    # The release is live and recorded: a failing after_live/after_rollback command is a warning
    # (docs/design.md §15); switching back would take down a release that passed its smoke test.
    hooks.run(config, hooks.after_live_point(action), paths.release(sha), sha=sha, previous=previous,
              action=action, env_values=env_values, progress=progress)
    say(f"{sha[:12]} is live ({_took(action, started, progress)})")


def _seconds(started: float, progress: Progress) -> float:
    """The whole command's seconds: its earlier parts (a deploy's build) and these steps."""
    return round(time.monotonic() - started + sum(progress.earlier.values()), 2)


def _took(action: str, started: float, progress: Progress) -> str:
    if not progress.earlier:
        return f"{action} took {time.monotonic() - started:.1f}s"
    parts = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in progress.earlier.items())
    return f"{action} took {_seconds(started, progress):.1f}s: {parts}, activate {time.monotonic() - started:.1f}s"


def _record_committed(record_live, sha: str) -> None:
    """Every server has the word to keep the release: a history line that cannot be written is
    reported as it is, never by switching this one server back."""
    try:
        record_live()
    except BaseException as exc:
        raise OperationFailed(
            f"{sha[:12]} is live, but its history line could not be written: {as_failure(exc).message}",
            hint="the release stays live on every server; free the disk or fix state/ and check `deployer status`",
        ) from exc


def _leave_standby_or_warn(config: Config, paths: Paths, colours: "Colours", gate: Gate | None) -> str | None:
    """Leaving the standby comes once the release is live for good: a failure there is a
    warning (exit 0, returned for the history line), never a switch-back."""
    try:
        _leave_standby(config, paths, colours)
        return None
    except BaseException as exc:
        warning = (f"the old colour {colours.old} was not stopped or recorded as the standby: "
                   f"{as_failure(exc).message}; `deployer expire-standby` or the next deploy stops it")
        say(f"deployer: warning: {warning}")
        if gate is not None:
            gate.tell("warning", message=warning)
        return warning


def _unapply_after_switch(config: Config, paths: Paths, env_values: dict[str, str], plan: schema.Plan,
                          progress: Progress) -> None:
    """After the switch: a kill from here on leaves `current` on the release that matches the
    smaller schema (docs/design.md §7)."""
    with progress.step("unapply migrations"):
        schema.unapply_ahead(config, paths, env_values, plan, progress.note)
        if not plan.ahead:
            progress.note("nothing to unapply")


def _record_failure(paths: Paths, previous: str | None, sha: str, result: str, failure: DeployError,
                    record: dict) -> str:
    """The failed attempt's history line; returns what to say about it (even when writing fails)."""
    action = record.pop("action")
    try:
        history.append(paths, action, previous, sha, result, reason=failure.message, **record)
        return f"{sha[:12]} is marked {result}"
    except BaseException as exc:
        return f"recording it in history failed: {as_failure(exc).message}"


def _backup_of(plan: schema.Plan | None) -> str | None:
    return plan.backup if plan is not None else None


def _result_of(stage: str, exc: BaseException) -> str:
    """Only a release that did not come up or did not pass its smoke test is failed-smoke (never
    a rollback target); an interrupt or a failure of the deployer itself is `failed`. An
    orchestrator that called it off says which (another server's smoke test, or it went away)."""
    if isinstance(exc, Overruled):
        return exc.result
    return history.FAILED_SMOKE if stage == RESTART and isinstance(exc, DeployError) else history.FAILED


def as_failure(exc: BaseException) -> DeployError:
    """Any exception as the one-line failure it will be reported as."""
    if isinstance(exc, DeployError):
        return exc
    if isinstance(exc, KeyboardInterrupt):
        return OperationFailed("interrupted")
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return OperationFailed(f"{exc.strerror or exc}{where}")
    return OperationFailed(f"unexpected {type(exc).__name__}: {exc}")


def _mark_underway(paths: Paths, action: str, previous: str | None, sha: str, unapply_with: str | None,
                   force: bool) -> None:
    """Just before `current` moves: what this run is, and what its operator authorised, for the
    run that finishes it if this one is killed before its history line (deployer/underway.py)."""
    underway.write(paths, underway.Underway(action, previous, sha, unapply_with, force))


def _odd_link(paths: Paths) -> str | None:
    """What `current` points at when it is a symlink to no release (a put-back restores it)."""
    if current_sha(paths) is not None:
        return None
    try:
        return os.readlink(paths.current)
    except OSError:
        return None


def _left_as_it_was(paths: Paths, previous: str | None) -> str:
    """The true state after a failure before the switch (`current` did not move), in words."""
    in_current = current_sha(paths)
    if in_current is not None and in_current != previous:
        recorded = f"{previous[:12]} is the last release history records as live" if previous else \
            "history records no live release"
        return (f"current was not moved: it still points at {in_current[:12]}, where a killed run left it "
                f"without finishing ({recorded})")
    if in_current is not None:
        return f"{in_current[:12]} is still live"
    if paths.current.is_symlink():
        return f"current was not moved: it still {describe_current(paths)}"
    return "nothing was live and nothing is"


def _put_back_schema(config, paths, sha, previous, failure, env_values, gate=None):
    """A failure before the switch: `current` never moved; undo a partial migration."""
    schema_note = _restore_schema(config, paths, sha, previous, env_values, gate)
    state = _left_as_it_was(paths, previous)
    if current_sha(paths) == previous:
        state = f"the live release is untouched: {state}"
    failure.hint = "; ".join(part for part in (state, schema_note, failure.hint) if part)


def _put_back_after_switch(config, paths, sha, previous, stage, failure, env_values, result, record, colours=None,
                           gate=None, link_before=None):
    """`current` may have moved: relink the previous release (or the link that named no release),
    bring the database back to its migrations, restart and smoke-test it, record the attempt. Each
    part reports the true state even when it fails itself."""
    if config.service.standby and colours is None:
        colours = _colours_now(config, paths, sha)
    try:  # the relinks come before any word about them: output must never decide (§3)
        _relink_before(paths, previous, link_before)
        if colours is not None:
            _socket_back(config, paths, colours, previous)
        underway.clear(paths)
    except BaseException as exc:
        failure.hint = (f"switching back FAILED ({as_failure(exc).message}): current still points at "
                        f"{sha[:12]}; run `deployer rollback --to {(previous or sha)[:12]}`")
        return
    say(f"    switched back to {previous[:12]}" if previous else
        f"    no release was live before {sha[:12]}; current {describe_current(paths)} again" if link_before else
        f"    no release was live before {sha[:12]}; current is removed")
    schema_note = _restore_schema(config, paths, sha, previous, env_values, gate)
    if previous is None and link_before is not None:
        restarted = f"; the service was restarted on {sha[:12]} and is not restarted again" if stage in (RESTART, RECORD) else ""
        back = f"no release was live before: current {describe_current(paths)} again, as before this run{restarted}"
    elif previous is None:
        back = "nothing was live before, and current is removed"
    elif colours is not None:
        back = _standby_back(config, paths, colours, previous)
    elif stage in (RESTART, RECORD):
        back = _restart_previous(config, paths, previous)
    else:
        back = f"{previous[:12]} is live again (the service was not restarted)"
    marked = _record_failure(paths, previous, sha, result, failure, record)
    failure.hint = "; ".join(part for part in (back, schema_note, marked) if part)


def _relink_before(paths: Paths, previous: str | None, link_before: str | None) -> None:
    """`current` as it was before the run: the previous release, the link that named no release,
    or nothing (a first deploy)."""
    if previous is not None:
        switch.point_current_at(paths, previous)
    elif link_before is not None:
        switch.replace_link(paths.current, link_before)
    else:
        switch.remove_current(paths)


def _prepare_standby(config: Config, paths: Paths, progress: Progress, sha: str, previous: str | None) -> Colours:
    """Steps 1-2 of a standby activation: the idle colour runs `sha` and passes the smoke test on
    its own socket. The public has not seen it; nothing live has changed."""
    new, live = standby.colours_for(config, paths, sha)
    try:
        old_link = os.readlink(standby.socket_link(paths))
    except OSError:
        old_link = None
    warm = standby.slot_sha(paths, new) == sha and standby.running(config, new)
    if warm:
        with progress.step(f"{new} already runs {sha[:12]}"):
            progress.note("warm standby: no start")
    else:
        with progress.step(f"start {new} from {sha[:12]}"):
            if standby.running(config, new):
                standby.stop(config, new)
            standby.clear_standby(paths)
            standby.point_slot_at(paths, new, sha)
            standby.start(config, new)
    with progress.step(f"smoke test {new} socket"):
        smoke.run(config.smoke, sha, paths.release(sha), socket_path=config.service.socket_of(new))
    return Colours(new, live, old_link)


def _leave_standby(config: Config, paths: Paths, colours: Colours) -> None:
    """Step 5: the old colour stays up as a warm standby for service.standby_seconds (0: stopped now)."""
    seconds = config.service.standby_seconds
    old_sha = standby.slot_sha(paths, colours.old) if colours.old else None
    if colours.old is None or old_sha is None:
        standby.clear_standby(paths)
        return
    if seconds <= 0:
        standby.clear_standby(paths)
        standby.stop(config, colours.old)
        say(f"    stopped {colours.old} (service.standby_seconds is 0)")
        return
    standby.write_standby(paths, colours.old, old_sha, seconds)
    say(f"    {colours.old} keeps running {old_sha[:12]} as a warm standby for {seconds:.0f}s")


def _colours_now(config: Config, paths: Paths, sha: str) -> Colours:
    """After a failure past the switch: which colour serves the failed release, which the previous."""
    new = next((c for c in standby.COLOURS if standby.slot_sha(paths, c) == sha), standby.idle_colour(config, paths))
    old = standby.other(new)
    return Colours(new, old if standby.slot_sha(paths, old) else None)


def _socket_back(config: Config, paths: Paths, colours: Colours, previous: str | None) -> None:
    if colours.old is not None and standby.slot_sha(paths, colours.old) == previous:
        standby.point_socket_at(config, paths, colours.old)
    elif colours.old_link is not None:
        standby.replace_link(standby.socket_link(paths), colours.old_link)
    elif previous is None:
        standby.remove_socket_link(paths)


def _standby_back(config: Config, paths: Paths, colours: Colours, previous: str) -> str:
    """The old colour never stopped: once the links are back it serves again. Stop the new one
    and prove the old one answers through the front door."""
    try:
        standby.stop(config, colours.new)
        standby.clear_standby(paths)
    except BaseException as exc:
        say(f"    stopping {colours.new} failed: {as_failure(exc).message}")
    if colours.old is None or standby.slot_sha(paths, colours.old) != previous:
        # The server ran the restart strategy until this run: the old single service still serves.
        return f"{previous[:12]} is live again (current switched back; live.sock was not there before)"
    try:
        if not standby.running(config, colours.old):
            standby.start(config, colours.old)
        smoke.run(config.smoke, previous, paths.release(previous))
        return f"{previous[:12]} is live again ({colours.old})"
    except BaseException as exc:
        return f"{previous[:12]} is back in current but did not pass its smoke test either: {as_failure(exc).message}"


def _put_back_before_switch(config, paths, sha, previous, failure, env_values, result, record, gate=None):
    """A standby that failed to start or failed its smoke test on its own socket: the public
    never saw it. Stop it, put the schema back, record it."""
    new = next((c for c in standby.COLOURS if standby.slot_sha(paths, c) == sha
                and c != standby.live_colour(config, paths)), None)
    stopped = ""
    if new is not None:
        try:
            standby.stop(config, new)
            stopped = f"{new} is stopped"
        except BaseException as exc:
            stopped = f"stopping {new} failed: {as_failure(exc).message}"
    schema_note = _restore_schema(config, paths, sha, previous, env_values, gate)
    marked = _record_failure(paths, previous, sha, result, failure, record)
    failure.hint = "; ".join(part for part in (f"the public never saw it: {_left_as_it_was(paths, previous)}", stopped,
                                               schema_note, marked) if part)


def _restart_previous(config: Config, paths: Paths, previous: str) -> str:
    try:
        service.restart(config)
        smoke.run(config.smoke, previous, paths.release(previous))
        return f"{previous[:12]} is live again"
    except BaseException as exc:
        return f"{previous[:12]} is back in current but did not pass its smoke test either: {as_failure(exc).message}"


def _restore_schema(config, paths, sha, previous, env_values, gate=None) -> str:
    """Bring the database back to the previous release's migrations (unapplying with the new
    release's code what it applied, re-applying what a --migrate rollback unapplied). Returns
    a note for the failure message, empty when nothing needed doing. A server that does not
    own the schema (an orchestrated deploy migrates on the migrations server only) leaves it."""
    if previous is None or (gate is not None and not gate.owns_schema):
        return ""
    meta = releases.read_metadata(paths.release(previous))
    if meta is None:
        return f"the database was left as it is: {previous[:12]}'s RELEASE.json cannot be read"
    note = lambda line: say(f"    {line}")  # noqa: E731
    try:
        changed = schema.bring_to(
            config, paths, env_values, previous, meta, unapply_with=sha,
            label=f"before-restore-{previous[:12]}", note=note,
            before_change=(lambda: gate.wait_for_schema_turn(note)) if gate is not None else None,
        )
    except BaseException as exc:
        return (f"the database could NOT be brought back to {previous[:12]}'s migrations "
                f"({as_failure(exc).message}); restore the backup in state/backups/ with the service stopped")
    return f"the database is back on {previous[:12]}'s migrations" if changed else ""


def main(config: Config, paths: Paths, sha_or_prefix: str, gate: Gate | None = None) -> None:
    preflight.require_switchable(config, paths)
    with hooks.on_failure(config, paths, "activate") as attempt:
        activate(config, paths, sha_or_prefix, attempt=attempt, gate=gate)
