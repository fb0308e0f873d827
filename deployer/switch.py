"""Swapping `current` in one rename(2) (docs/design.md §6.3)."""

from __future__ import annotations

import os
import secrets

from deployer.errors import OperationFailed
from deployer.paths import Paths, fsync_dir


def point_current_at(paths: Paths, sha: str) -> None:
    """Make `current` a relative symlink to releases/<sha>: symlink at a temporary name, then
    os.replace over `current`, then fsync the directory. Never rm + ln."""
    current = paths.current
    if current.exists() and not current.is_symlink():
        raise OperationFailed(f"{current} exists and is not a symlink; refusing to replace it", hint="move it away by hand")
    target = os.path.join("releases", paths.release(sha).name)
    for stale in paths.root.glob(".current-*"):  # left by a run killed mid-switch
        if stale.is_symlink():
            stale.unlink()
    tmp = paths.root / f".current-{secrets.token_hex(4)}"
    os.symlink(target, tmp)
    try:
        os.replace(tmp, current)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(paths.root)


def remove_current(paths: Paths) -> None:
    if paths.current.is_symlink():
        paths.current.unlink()
        fsync_dir(paths.root)
