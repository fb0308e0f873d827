"""The `deployer` command line (docs/design.md §3). Commands live in deployer/commands/, one per module.

Exit codes: 0 success; 1 the operation failed (the live site was left as it was or put back);
2 bad input or configuration; 3 another deploy holds the lock.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import shlex
import sys
import traceback

import click

from deployer import __version__, git, notify, output, releases, signals, standby
from deployer import lock as lock_mod
from deployer import plan as plan_mod
from deployer.commands import activate as activate_cmd
from deployer.commands import check as check_cmd
from deployer.commands import deploy as deploy_cmd
from deployer.commands import list as list_cmd
from deployer.commands import prune as prune_cmd
from deployer.commands import release as release_cmd
from deployer.commands import rollback as rollback_cmd
from deployer.commands import status as status_cmd
from deployer.config import Config, config_path, load_config
from deployer.errors import BadInput, DeployError, OperationFailed, shown
from deployer.argv import command as command_words, rollback_command
from deployer.fleet import MAX_BARRIER, FleetConfig, is_fleet_file, load_fleet
from deployer.gate import BARRIER_TIMEOUT, PUT_BACK_TIMEOUT, Gate
from deployer.lock import deploy_lock, held_lock
from deployer.paths import Paths


class Session:
    """What every command needs: the loaded config and the deploy_to layout."""

    def __init__(self, config_file: str | None, debug: bool, held_lock: str | None = None) -> None:
        self.config_file = config_file
        self.debug = debug
        self.held_lock = held_lock  # an orchestrator's token (read from stdin): run under the lock it holds (§13)

    def load(self) -> tuple[Config, Paths]:
        path = config_path(self.config_file)
        if is_fleet_file(path):
            command = click.get_current_context().info_name
            raise BadInput(f"{path} lists servers: `deployer {command}` runs on one server, not across servers",
                           hint="run it on that server with its own releases.yml (docs/design.md §13)")
        config = load_config(path)
        return config, Paths(config.deploy_to)

    def fleet(self) -> FleetConfig | None:
        """The orchestrator config when the config file lists servers; None for a server's own
        releases.yml (today's local behaviour, docs/design.md §13)."""
        path = config_path(self.config_file)
        return load_fleet(path) if is_fleet_file(path) else None


def _report(exc: DeployError) -> None:
    if exc.details:
        for line in exc.details.rstrip().splitlines():
            click.echo(f"    | {line}", err=True)
    hint = f" — {exc.hint}" if exc.hint else ""
    click.echo(f"deployer: error: {exc.message}{hint}", err=True)


class DeployerGroup(click.Group):
    """Turns expected failures into one clear line and their exit code, never a traceback."""

    def main(self, *args, **kwargs):
        output.make_best_effort()  # before click prints anything, a usage error included
        return super().main(*args, **kwargs)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except DeployError as exc:
            if _debug(ctx):
                traceback.print_exc()
            _report(exc)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("deployer: interrupted; the live site was not switched by this run unless said above", err=True)
            ctx.exit(130)
        except OSError as exc:
            if _debug(ctx):
                traceback.print_exc()
            _report(OperationFailed(_describe_os_error(exc), hint=_OS_ERROR_HINTS.get(exc.errno, "")))
            ctx.exit(1)


_OS_ERROR_HINTS = {
    errno.ENOSPC: "free disk space (`deployer prune` removes old releases); the live release was not switched",
    errno.EDQUOT: "free disk space (`deployer prune` removes old releases); the live release was not switched",
    errno.EACCES: "check the owners and modes of deploy_to (docs/server-guide.md)",
    errno.EPERM: "check the owners and modes of deploy_to (docs/server-guide.md)",
}


def _describe_os_error(exc: OSError) -> str:
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"


def _debug(ctx: click.Context) -> bool:
    return bool(ctx.obj and ctx.obj.debug) or os.environ.get("DEPLOYER_DEBUG") == "1"


def _locked(paths: Paths, wait: float):
    session = click.get_current_context().find_object(Session)
    if session is not None and session.held_lock:
        return held_lock(paths, session.held_lock)
    return deploy_lock(paths, _described(), wait)


def _described() -> str:
    """The command line recorded as the lock holder."""
    return "deployer " + shlex.join(sys.argv[1:])


def _run_locked(session: Session, wait: float, command_main, *args) -> None:
    """Load the config, take the deploy lock, run the command; notify once the lock is released."""
    config, paths = session.load()
    watch = notify.Watch(config, paths, click.get_current_context().info_name, args)
    try:
        with _locked(paths, wait), watch.running():
            _expire_standby(config, paths)
            command_main(config, paths, *args)
    finally:
        watch.send()


def _expire_standby(config: Config, paths: Paths) -> None:
    """Every command that takes the lock first stops a standby whose window has passed
    (docs/design.md §16); a failure to stop it is a warning, never the command's failure."""
    try:
        standby.stop_expired(config, paths, say=lambda line: click.echo(line, err=True))
    except DeployError as exc:
        click.echo(f"deployer: warning: stopping the expired standby failed: {exc.message}", err=True)


def _option(param: click.Parameter | None) -> str:
    return param.opts[0] if param is not None and param.opts else "value"


class Seconds(click.ParamType):
    """A finite number of seconds >= 0 (`nan` or `inf` would wait forever)."""

    name = "seconds"

    def convert(self, value, param, ctx) -> float:
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            raise BadInput(f"{_option(param)} takes a number of seconds, got {shown(str(value))}") from None
        if not math.isfinite(seconds) or seconds < 0:
            raise BadInput(f"{_option(param)} must be a finite number of seconds >= 0, got {shown(str(value))}")
        return seconds


class Count(click.ParamType):
    """A whole number >= 1."""

    name = "count"

    def convert(self, value, param, ctx) -> int:
        text = str(value).strip()
        try:
            if not (text.lstrip("+-").isdecimal() and text.isascii()):
                raise ValueError(text)
            number = int(text)
        except ValueError:  # not a number, or more digits than int() converts
            raise BadInput(f"{_option(param)} takes a whole number, got {shown(str(value))}") from None
        if number < 1:
            raise BadInput(f"{_option(param)} must be at least 1, got {number}")
        return number


class ShaPrefix(click.ParamType):
    """A release's sha or a prefix of one (the release itself is looked up later)."""

    name = "sha"

    def convert(self, value, param, ctx) -> str:
        if not str(value).strip():
            if isinstance(param, click.Option):
                raise BadInput(f"{_option(param)} was given an empty sha",
                               hint="name a release from `deployer list`, or leave the option out")
            raise BadInput("an empty sha was given", hint="name a release from `deployer list`")
        return releases.validate_prefix(str(value))


class CommitIsh(click.ParamType):
    """A branch, tag or sha, checked as `release` checks it on one server (git.validate_ref):
    an orchestrator refuses a bad ref before it contacts any server."""

    name = "commit-ish"

    def convert(self, value, param, ctx) -> str:
        return git.validate_ref(str(value))


def plan_options(command):
    """--plan and --json: show what the command would do, change nothing, take no lock."""
    command = click.option("--json", "as_json", is_flag=True, help="With --plan: one JSON object (see docs/reference.md).")(command)
    return click.option("--plan", "plan", is_flag=True,
                        help="Print what would happen, step by step; change nothing, take no lock.")(command)


def _planned(session: Session, plan: bool, as_json: bool, make_plan, *args) -> bool:
    """Run the plan instead of the command when --plan is given (no lock). True if it ran."""
    plan_mod.require_plan_for_json(plan, as_json)
    if not plan:
        return False
    config, paths = session.load()
    plan_mod.show(make_plan(config, paths, *args), as_json)
    return True


def _fleet():
    """The orchestrator's commands, imported only when a config lists servers (asyncssh takes
    ~0.1 s to import, which every command on a server would pay)."""
    from deployer.commands import fleet
    return fleet


def _fleet_live():
    from deployer.commands import fleet_live
    return fleet_live


def _across_servers(session: Session, plan: bool, as_json: bool, wait: float, command: list[str]) -> FleetConfig | None:
    """The orchestrator config when there is one (docs/design.md §13), with --plan already shown
    for every server; None for a server's own config."""
    fleet = session.fleet()
    if fleet is None:
        return None
    plan_mod.require_plan_for_json(plan, as_json)
    if wait:
        raise BadInput("--wait is not for an orchestrator: a lock held on any server is exit 3",
                       hint="run the command again once that deploy has finished")
    if plan:
        _fleet().plan(fleet, command, as_json)
    return fleet


def orchestrated_options(command):
    """How an orchestrator runs activate/rollback on a server (deployer/gate.py); hidden. They
    reach the command as its `**orchestration` keywords, which go to `_gate` as they are."""
    command = click.option("--schema-elsewhere", is_flag=True, hidden=True)(command)
    for name, default in (("--barrier-timeout", BARRIER_TIMEOUT), ("--put-back-timeout", PUT_BACK_TIMEOUT)):
        command = click.option(name, type=click.FloatRange(0, MAX_BARRIER, min_open=True), default=default,
                               hidden=True)(command)
    return click.option("--orchestrated", "deploy_id", metavar="DEPLOY_ID", hidden=True)(command)


_DEPLOY_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z-]{0,63}")


def _gate(session: Session, deploy_id: str | None, schema_elsewhere: bool, barrier_timeout: float,
          put_back_timeout: float) -> Gate | None:
    if deploy_id is None:
        if schema_elsewhere:
            raise BadInput("--schema-elsewhere goes with --orchestrated")
        return None
    if not session.held_lock:
        raise BadInput("--orchestrated runs only under an orchestrator's lock (--held-lock)")
    if not _DEPLOY_ID.fullmatch(deploy_id):
        raise BadInput(f"not a deploy id: {shown(deploy_id)}")
    return Gate(deploy_id, owns_schema=not schema_elsewhere, barrier_timeout=barrier_timeout,
                put_back_timeout=put_back_timeout)


# Errors in these types raise BadInput inside DeployerGroup.invoke (click parses a subcommand's
# options there), so they end as one `deployer: error:` line with exit 2.
wait_option = click.option(
    "--wait", type=Seconds(), default=0, metavar="SECONDS",
    help="Wait up to SECONDS for another deploy's lock instead of failing with exit 3.",
)


@click.group(cls=DeployerGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_file", metavar="FILE", help="Config file (default: $DEPLOYER_CONFIG, else ./releases.yml).")
@click.option("--debug", is_flag=True, help="Show a traceback for failures.")
@click.option("--held-lock", "under_held_lock", is_flag=True, hidden=True,
              help="Run under the lock an orchestrator holds; its token is the first line on stdin "
                   "(docs/design.md §13).")
@click.version_option(__version__, prog_name="deployer")
@click.pass_context
def main(ctx: click.Context, config_file: str | None, debug: bool, under_held_lock: bool) -> None:
    """Atomic release-directory deploys for the Skinmenu site.

    Exit codes: 0 ok, 1 operation failed (live site left as it was or put back),
    2 bad input or configuration, 3 another deploy holds the lock.
    """
    ctx.obj = Session(config_file, debug)
    if under_held_lock:  # first thing read from stdin; an orchestrated command's words come after it
        ctx.obj.held_lock = lock_mod.read_token(sys.stdin.fileno())
    signals.stop_like_ctrl_c()


@main.command()
@click.argument("commit", type=CommitIsh())
@click.option("--rebuild", is_flag=True, help="Build again even if complete (not for the live release).")
@wait_option
@plan_options
@click.pass_obj
def release(session: Session, commit: str, rebuild: bool, wait: float, plan: bool, as_json: bool) -> None:
    """Build COMMIT (branch, tag or sha) into releases/<sha>. Prints the sha."""
    fleet = _across_servers(session, plan, as_json, wait,
                            command_words("release", *(["--rebuild"] if rebuild else []), operands=[commit]))
    if fleet is not None:
        if rebuild:
            raise BadInput("--rebuild runs on one server at a time",
                           hint="run it on that server with its own releases.yml")
        if not plan:
            _fleet().release(fleet, commit)
        return
    if _planned(session, plan, as_json, plan_mod.release_plan, commit, rebuild):
        return
    _run_locked(session, wait, release_cmd.main, commit, rebuild)


@main.command()
@click.argument("sha", type=ShaPrefix())
@wait_option
@plan_options
@orchestrated_options
@click.pass_obj
def activate(session: Session, sha: str, wait: float, plan: bool, as_json: bool, **orchestration) -> None:
    """Make a built release live: migrate, switch, restart, smoke test (or switch back)."""
    fleet = _across_servers(session, plan, as_json, wait, command_words("activate", operands=[sha]))
    if fleet is not None:
        if not plan:
            _fleet_live().activate(fleet, sha)
        return
    if _planned(session, plan, as_json, plan_mod.activate_plan, sha):
        return
    _run_locked(session, wait, activate_cmd.main, sha, _gate(session, **orchestration))


@main.command()
@click.argument("commit", type=CommitIsh())
@wait_option
@plan_options
@click.pass_obj
def deploy(session: Session, commit: str, wait: float, plan: bool, as_json: bool) -> None:
    """Release COMMIT, then activate it."""
    fleet = _across_servers(session, plan, as_json, wait, command_words("deploy", operands=[commit]))
    if fleet is not None:
        if not plan:
            _fleet_live().deploy(fleet, commit)
        return
    if _planned(session, plan, as_json, plan_mod.deploy_plan, commit):
        return
    _run_locked(session, wait, deploy_cmd.main, commit)


@main.command()
@click.option("--to", "to", type=ShaPrefix(), metavar="SHA", help="Roll back to this release instead of the previous one.")
@click.option("--migrate", is_flag=True, help="Unapply migrations the target does not know (after a backup).")
@click.option("--force", is_flag=True, help="Switch even though the database has migrations the target does not know.")
@wait_option
@plan_options
@orchestrated_options
@click.pass_obj
def rollback(session: Session, to: str | None, migrate: bool, force: bool, wait: float, plan: bool, as_json: bool,
             **orchestration) -> None:
    """Make the previously live release live again (from history)."""
    if migrate and force:
        raise BadInput("--migrate and --force exclude each other", hint="pass one of them")
    fleet = _across_servers(session, plan, as_json, wait, rollback_command(to, migrate, force))
    if fleet is not None:
        if not plan:
            _fleet_live().rollback(fleet, to, migrate, force)
        return
    if _planned(session, plan, as_json, plan_mod.rollback_plan, to, migrate, force):
        return
    _run_locked(session, wait, rollback_cmd.main, to, migrate, force, _gate(session, **orchestration))


@main.command()
@click.option("--keep", type=Count(), default=None, metavar="N", help="Releases to keep (default: keep_releases from the config).")
@click.option("--dry-run", is_flag=True, help="Only report what would be removed.")
@wait_option
@plan_options
@click.pass_obj
def prune(session: Session, keep: int | None, dry_run: bool, wait: float, plan: bool, as_json: bool) -> None:
    """Delete old releases; never current, the rollback target or one in use."""
    fleet = _across_servers(session, plan, as_json, wait,
                            ["prune"] + (["--keep", str(keep)] if keep is not None else []))
    if fleet is not None:
        if not plan:
            _fleet().prune(fleet, keep, dry_run)
        return
    if _planned(session, plan, as_json, lambda config, paths: plan_mod.prune_plan(
            config, paths, config.keep_releases if keep is None else keep)):
        return
    config, paths = session.load()
    if dry_run:
        prune_cmd.main(config, paths, config.keep_releases if keep is None else keep, dry_run)
        return
    watch = notify.Watch(config, paths, "prune", ())
    try:
        with _locked(paths, wait), watch.running():
            _expire_standby(config, paths)
            prune_cmd.main(config, paths, config.keep_releases if keep is None else keep, dry_run)
    finally:
        watch.send()


@main.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Stable JSON output (see docs/reference.md).")
@click.pass_obj
def list_(session: Session, as_json: bool) -> None:
    """Releases, newest first, with their state."""
    fleet = session.fleet()
    if fleet is not None:
        _fleet().list_releases(fleet, as_json)
        return
    config, paths = session.load()
    list_cmd.main(config, paths, as_json)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Stable JSON output (see docs/reference.md).")
@click.pass_obj
def status(session: Session, as_json: bool) -> None:
    """Current and previous release, lock holder, service state, site health.

    With an orchestrator config: one row per server, and whether they agree."""
    fleet = session.fleet()
    if fleet is not None:
        _fleet().status(fleet, as_json)
        return
    config, paths = session.load()
    status_cmd.main(config, paths, as_json)


@main.command(name="expire-standby")
@wait_option
@click.pass_obj
def expire_standby(session: Session, wait: float) -> None:
    """Stop the standby colour if its window has passed (skinmenu-standby.timer runs this)."""
    config, paths = session.load()
    with _locked(paths, wait):
        stopped = standby.stop_expired(config, paths, say=lambda line: click.echo(line, err=True))
    if stopped is None:
        click.echo("no expired standby", err=True)


@main.command(name="hold-lock", hidden=True)
@click.pass_obj
def hold_lock(session: Session) -> None:
    """Take the deploy lock for an orchestrator and hold it while its heartbeat comes (docs/design.md
    §13): when the orchestrator dies, or the network to it goes, the lock is released. The token
    is the first line on stdin; the heartbeat's newlines follow it."""
    token = session.held_lock or lock_mod.read_token(sys.stdin.fileno())
    config, paths = session.load()
    with deploy_lock(paths, "deployer hold-lock (for an orchestrator)", 0, orchestrator_token=token):
        click.echo(json.dumps({"locked": True, "holder": lock_mod.read_holder(paths)}))
        sys.stdout.flush()
        lock_mod.wait_for_heartbeats(sys.stdin.fileno())


@main.command()
@click.pass_obj
def check(session: Session) -> None:
    """Preflight: config, paths, env file, python, git, service, nginx. Changes nothing.

    With an orchestrator config: every server's SSH, host key, deployer version and own check."""
    fleet = session.fleet()
    if fleet is not None:
        sys.exit(_fleet().check(fleet))
    config, paths = session.load()
    sys.exit(check_cmd.main(config, paths))
