"""Swapping `current` in one rename(2) (docs/design.md §6.3)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from deployer.errors import OperationFailed
from deployer.paths import Paths, fsync_dir


def point_current_at(paths: Paths, sha: str) -> None:
    """Make `current` a relative symlink to releases/<sha>."""
    replace_link(paths.current, os.path.join("releases", paths.release(sha).name))


def replace_link(link: Path, target: str) -> None:
    """Point `link` at `target` in one rename(2): a symlink at a temporary name, os.replace over
    `link`, then fsync of the directory. Never rm + ln."""
    if link.exists() and not link.is_symlink():
        raise OperationFailed(f"{link} exists and is not a symlink; refusing to replace it", hint="move it away by hand")
    for stale in link.parent.glob(f".{link.name}-*"):  # left by a run killed mid-switch
        if stale.is_symlink():
            stale.unlink()
    tmp = link.parent / f".{link.name}-{secrets.token_hex(4)}"
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(link.parent)


def remove_current(paths: Paths) -> None:
    if paths.current.is_symlink():
        paths.current.unlink()
        fsync_dir(paths.root)
