"""The app service, driven by the configured plain commands (docs/design.md §4, §6.4)."""

from __future__ import annotations

import os
import shutil
import subprocess

from deployer.config import Config
from deployer.errors import BadInput, OperationFailed, shown
from deployer.proc import clean_env, run

RESTART_TIMEOUT = 120


def restart(config: Config) -> None:
    run(config.service.restart_argv, env=clean_env(), what="service restart", timeout=RESTART_TIMEOUT)


def require_restart_program(config: Config) -> None:
    """Before anything changes: the restart program exists and may be executed. A typo there
    must not be found only after `current` moved."""
    program = config.service.restart_argv[0]
    found = shutil.which(program)
    if found is None:
        why = "is not executable" if os.sep in program and os.path.isfile(program) else "was not found"
        raise BadInput(f"service.restart: the program {shown(program)} {why}", hint=f"fix 'service.restart' in {config.path}")


def state(config: Config) -> str:
    """'active', 'inactive', or 'unknown' when no is_active command is configured."""
    if not config.service.is_active:
        return "unknown"
    try:
        proc = subprocess.run(config.service.is_active_argv, capture_output=True, timeout=30, env=clean_env())
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OperationFailed(f"service is_active command failed to run: {exc}") from None
    return "active" if proc.returncode == 0 else "inactive"
