"""The app service, driven by the configured plain commands (DESIGN §4, §6.4)."""

from __future__ import annotations

import subprocess

from deployer.config import Config
from deployer.errors import OperationFailed
from deployer.proc import clean_env, run, split_command

RESTART_TIMEOUT = 120


def restart(config: Config) -> None:
    run(split_command(config.service.restart), env=clean_env(), what="service restart", timeout=RESTART_TIMEOUT)


def state(config: Config) -> str:
    """'active', 'inactive', or 'unknown' when no is_active command is configured."""
    if not config.service.is_active:
        return "unknown"
    try:
        proc = subprocess.run(split_command(config.service.is_active), capture_output=True, timeout=30, env=clean_env())
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OperationFailed(f"service is_active command failed to run: {exc}") from None
    return "active" if proc.returncode == 0 else "inactive"
