"""Operator commands at named points of a deploy (docs/design.md §15).

Before the switch (after_build, before_switch) the first failing command fails the run: nothing
live has changed. After it (after_live, after_rollback) and in on_failure every command runs and
a failure is a warning: the release is live, it passed its smoke test and history says so.
"""

from __future__ import annotations

import os
import signal
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from deployer import django, envfile
from deployer.config import Config
from deployer.errors import DeployError, OperationFailed, one_line, shown
from deployer.paths import Paths, current_sha
from deployer.proc import split_command
from deployer.steps import Progress, say

STRICT = ("after_build", "before_switch")  # nothing live changed yet: a failure fails the run
SHOWN_LINES = 40  # of a command's output, under its step line


class HookFailed(OperationFailed):
    """One command failed; `message` says how (exit status, timeout, not found)."""


def count(config: Config, *points: str) -> int:
    """How many steps the commands of `points` add to a command's Progress."""
    return sum(len(config.hooks.at(point)) for point in points)


def after_live_point(action: str) -> str:
    return "after_rollback" if action == "rollback" else "after_live"


def environment(
    config: Config, env_values: dict[str, str], release_dir: Path | None, *,
    sha: str | None, previous: str | None, action: str, error: str | None = None,
) -> dict[str, str]:
    """The Django processes' environment, the release's venv first on PATH, and DEPLOYER_*."""
    extra = {"DEPLOYER_SHA": sha or "", "DEPLOYER_PREVIOUS": previous or "", "DEPLOYER_ACTION": action}
    if error is not None:
        extra["DEPLOYER_ERROR"] = error
    env = django.environment(config, env_values, **extra)
    if release_dir is not None:
        venv_bin = release_dir / "venv" / "bin"
        env["PATH"] = os.pathsep.join([str(venv_bin), *filter(None, [env.get("PATH", os.defpath)])])
        env["VIRTUAL_ENV"] = str(release_dir / "venv")
    return env


def run(
    config: Config, point: str, release_dir: Path | None, *, sha: str | None, previous: str | None,
    action: str, env_values: dict[str, str], progress: Progress, error: str | None = None,
) -> list[str]:
    """Run the commands of `point` in order, each a numbered, timed step with its output under it.

    At a STRICT point the first failure raises (exit 1). Elsewhere every command runs; each
    failure is printed as a warning and returned. `release_dir` None (on_failure with nothing
    live) runs the commands in deploy_to, with no venv on PATH."""
    commands = config.hooks.at(point)
    if not commands:
        return []
    env = environment(config, env_values, release_dir, sha=sha, previous=previous, action=action, error=error)
    cwd = release_dir / config.django.project_dir if release_dir is not None else config.deploy_to
    failures = []
    for command in commands:
        argv = split_command(command)
        try:
            with progress.step(f"hook {point}: {one_line(' '.join(command.split()))}"):
                try:
                    _show(progress, _execute(argv, cwd, env, config.hooks.timeout))
                except HookFailed as exc:
                    _show(progress, exc.output)
                    raise
        except HookFailed as exc:
            if point == "after_build":
                exc.hint = "the release was not kept; nothing live changed"
            if point in STRICT:
                raise
            failures.append(_warn(point, command, exc.why, sha))
        except KeyboardInterrupt:
            if point not in STRICT:
                _warn(point, command, "interrupted", sha)
            raise
    return failures


def _warn(point: str, command: str, why: str, sha: str | None) -> str:
    live = f" — {sha[:12]} is live and passed its smoke test" if point in ("after_live", "after_rollback") and sha else ""
    line = f"hook {point} command {shown(command)} failed: {why}{live}"
    say(f"deployer: warning: {line}")
    return line


def _show(progress: Progress, output: str) -> None:
    lines = output.rstrip().splitlines()
    if len(lines) > SHOWN_LINES:
        progress.note(f"| … {len(lines) - SHOWN_LINES} earlier lines not shown")
        lines = lines[-SHOWN_LINES:]
    for line in lines:
        progress.note(f"| {one_line(line.replace(chr(9), ' '))}")


def _execute(argv: list[str], cwd: Path, env: dict[str, str], timeout: float) -> str:
    """Run argv without a shell in its own process group, so a timeout kills what it started too."""
    try:
        proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True,
        )
    except OSError as exc:
        if isinstance(exc, FileNotFoundError) and exc.filename in (argv[0], None):
            raise _failed(f"command not found: {argv[0]}") from None
        where = f": {exc.filename}" if exc.filename else ""
        raise _failed(f"cannot run {argv[0]}: {exc.strerror or exc}{where}") from None
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise _failed(f"timed out after {timeout:g}s (killed)", _kill(proc)) from None
    except BaseException:
        _kill(proc)
        raise
    if proc.returncode < 0:
        raise _failed(f"killed by signal {-proc.returncode}", output)
    if proc.returncode != 0:
        raise _failed(f"exited with status {proc.returncode}", output)
    return output


def _failed(why: str, output: str = "") -> HookFailed:
    exc = HookFailed(why)
    exc.why = why
    exc.output = output
    return exc


def _kill(proc: subprocess.Popen) -> str:
    """Kill the command's whole process group; return what it printed."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        output, _ = proc.communicate(timeout=5)
        return output or ""
    except (subprocess.TimeoutExpired, OSError, ValueError):
        if proc.stdout:
            proc.stdout.close()
        return ""


@dataclass
class Attempt:
    """What on_failure needs to know about the run it reports: filled in as the run learns it."""

    action: str
    sha: str | None = None
    previous: str | None = None


@contextmanager
def on_failure(config: Config, paths: Paths, action: str) -> Iterator[Attempt]:
    """Run the on_failure commands when the body fails with exit 1 (not on bad input, a held
    lock or an interrupt: an operator who stopped the run is not sent more commands)."""
    attempt = Attempt(action, previous=current_sha(paths))
    try:
        yield attempt
    except (DeployError, OSError) as exc:
        if config.hooks.on_failure and _is_operation_failure(exc):
            run_on_failure(config, paths, attempt, _one_line_error(exc))
        raise


def _is_operation_failure(exc: BaseException) -> bool:
    if isinstance(exc, DeployError):
        return exc.exit_code == 1 and not isinstance(exc.__cause__, KeyboardInterrupt)
    return True  # an OSError ends as exit 1 (cli.py)


def _one_line_error(exc: BaseException) -> str:
    if isinstance(exc, DeployError):
        return exc.message + (f" — {exc.hint}" if exc.hint else "")
    where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
    return one_line(f"{getattr(exc, 'strerror', None) or exc}{where}")


def run_on_failure(config: Config, paths: Paths, attempt: Attempt, error: str) -> None:
    """The on_failure commands, in whatever release is live now (a failed build has no release
    of its own); with nothing live, in deploy_to without a venv on PATH. Failures are warnings."""
    live = current_sha(paths)
    try:
        env_values = envfile.load(config.env_file, config.required_env)
    except DeployError as exc:
        say(f"deployer: warning: hook on_failure not run: {exc.message}")
        return
    say("")
    progress = Progress(count(config, "on_failure"))
    try:
        run(config, "on_failure", paths.release(live) if live else None, sha=attempt.sha,
            previous=attempt.previous, action=attempt.action, env_values=env_values,
            progress=progress, error=error)
    except DeployError as exc:  # a command that cannot be split: config validation prevents it
        say(f"deployer: warning: hook on_failure: {exc.message}")
