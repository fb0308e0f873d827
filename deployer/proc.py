"""Running commands: captured output, the tail of it in errors, never a shell."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

from deployer.errors import BadInput, OperationFailed, shown

TAIL_LINES = 20


def tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def run(
    argv: list[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    what: str | None = None,
    timeout: float | None = None,
) -> str:
    """Run argv, return its stdout; on failure raise OperationFailed with the output's tail."""
    label = what or shlex.join(argv[:3])
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
    except FileNotFoundError:
        raise OperationFailed(f"{label}: command not found: {argv[0]}") from None
    except OSError as exc:  # no execute bit, a directory, a bad interpreter line...
        raise OperationFailed(f"{label}: cannot run {argv[0]}: {exc.strerror or exc}") from None
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _give_up_on(proc)
        raise OperationFailed(f"{label}: timed out after {timeout:g}s") from None
    except BaseException:
        _give_up_on(proc)
        raise
    if proc.returncode != 0:
        raise OperationFailed(f"{label} exited with status {proc.returncode}", details=tail(output))
    return output


def _give_up_on(proc: subprocess.Popen) -> None:
    """Kill a child we stop waiting for. A child that runs as root under sudo cannot be
    signalled by the deploy user (EPERM): leave it, close our end, and say it timed out."""
    try:
        proc.kill()
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.communicate(timeout=5)
    except (subprocess.TimeoutExpired, OSError, ValueError):
        if proc.stdout:
            proc.stdout.close()


def split_command(command: str) -> list[str]:
    """A configured command, split the way a shell would (docs/design.md §4), run without one.
    A command that cannot be split or names no program is bad input."""
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise BadInput(f"command {shown(command)} cannot be split like a shell would: {exc}") from None
    if not argv or not argv[0]:
        raise BadInput(f"command {shown(command)} names no program")
    if any("\0" in arg for arg in argv):
        raise BadInput(f"command {shown(command)} contains a NUL character")
    return argv


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The deployer's environment minus variables that would leak into a release's Python."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "DJANGO_"))}
    env.update(extra or {})
    return env
