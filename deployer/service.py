"""The app service, driven by the configured plain commands (docs/design.md §4, §6.4)."""

from __future__ import annotations

import os
import shutil
import subprocess

from deployer.config import Config
from deployer.errors import BadInput, OperationFailed, shown
from deployer.proc import clean_env, run, split_command

RESTART_TIMEOUT = 120


def restart(config: Config) -> None:
    run(config.service.restart_argv, env=clean_env(), what="service restart", timeout=RESTART_TIMEOUT)


def require_restart_program(config: Config) -> None:
    """Before anything changes: the restart program (standby: the start and stop programs)
    exists and may be executed. A typo there must not be found only after `current` moved."""
    keys = ("start", "stop") if config.service.standby else ("restart",)
    for key in keys:
        program = split_command(getattr(config.service, key))[0]
        found = shutil.which(program)
        if found is None:
            why = "is not executable" if os.sep in program and os.path.isfile(program) else "was not found"
            raise BadInput(f"service.{key}: the program {shown(program)} {why}", hint=f"fix 'service.{key}' in {config.path}")


def state(config: Config, colour: str | None = None) -> str:
    """'active', 'inactive', or 'unknown' when no is_active command is configured. With standby,
    the state of one colour (the live one when `colour` is None and one is live)."""
    if not config.service.is_active:
        return "unknown"
    argv = config.service.is_active_argv
    if config.service.standby:
        if colour is None:
            return "unknown"
        argv = config.service.colour_argv(config.service.is_active, colour)
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=30, env=clean_env())
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OperationFailed(f"service is_active command failed to run: {exc}") from None
    return "active" if proc.returncode == 0 else "inactive"
