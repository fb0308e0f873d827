"""The deploy_to layout of docs/design.md §1, and the few filesystem primitives built on it."""

from __future__ import annotations

import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

SHA_RE = re.compile(r"[0-9a-f]{40}")
PREFIX_RE = re.compile(r"[0-9a-f]{4,40}")
TMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class Paths:
    root: Path

    @property
    def repo(self) -> Path:
        return self.root / "repo"

    @property
    def releases(self) -> Path:
        return self.root / "releases"

    @property
    def current(self) -> Path:
        return self.root / "current"

    @property
    def shared(self) -> Path:
        return self.root / "shared"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def lock_file(self) -> Path:
        return self.state / "deploy.lock"

    @property
    def history_file(self) -> Path:
        return self.state / "history.jsonl"

    @property
    def backups(self) -> Path:
        return self.state / "backups"

    @property
    def uv_cache(self) -> Path:
        # On the same filesystem as releases/, so uv can hardlink from it.
        return self.root / ".cache" / "uv"

    def release(self, sha: str) -> Path:
        if not SHA_RE.fullmatch(sha):
            raise ValueError(f"not a full sha: {sha!r}")
        return self.releases / sha

    def new_tmp_release(self, sha: str) -> Path:
        return self.releases / f"{TMP_PREFIX}{sha}-{secrets.token_hex(4)}"

    def ensure_dirs(self) -> None:
        for path in (self.releases, self.shared):
            path.mkdir(parents=True, exist_ok=True)
        self.ensure_state()

    def ensure_state(self) -> None:
        """state/ and state/backups/ hold the lock, history and database copies: 0700 from
        the moment they exist, never created wider and tightened later."""
        for path in (self.state, self.backups):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)


def current_sha(paths: Paths) -> str | None:
    """The sha of the release `current` points at, or None when it points at no release: no
    link, not a symlink (switch refuses to touch it), a target outside releases/, or a release
    directory that is gone. Nothing is ever rolled back "from" a release that is not there."""
    try:
        target = os.readlink(paths.current)
    except OSError:
        return None
    name = Path(target).name
    if not SHA_RE.fullmatch(name):
        return None
    if os.path.normpath(os.path.join(paths.root, target)) != str(paths.releases / name):
        return None
    return name if (paths.releases / name).is_dir() else None


def describe_current(paths: Paths) -> str:
    """What `current` is, in words, for a message about the true state: `points at releases/<sha>`,
    `is missing`, `dangles (…)`, `points outside releases/ (…)`, `points at a file (…)`, …"""
    try:
        target = os.readlink(paths.current)
    except FileNotFoundError:
        return "is missing"
    except OSError:
        return "is not a symlink"
    shown = repr(target)
    if current_sha(paths) is not None:
        return f"points at {target}"
    try:
        resolved = paths.current.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return f"cannot be resolved (it points at {shown})"
    if not resolved.exists():
        return f"dangles (it points at {shown}, which does not exist)"
    if not resolved.is_dir():
        return f"points at a file ({shown}), not a release"
    return f"points outside releases/ ({shown})"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path)


def discard(paths: Paths, release: Path) -> None:
    """Delete a release so that no kill can leave half of it under its own name (the next
    run's clean-up finishes a killed delete)."""
    discard_dir(release)


def discard_dir(path: Path) -> None:
    """Delete a directory by one rename(2) to a temp name beside it first: nothing can see it
    half deleted under its own name, and a copy being taken from it fails instead."""
    doomed = path.parent / f"{TMP_PREFIX}discard-{path.name}-{secrets.token_hex(4)}"
    os.rename(path, doomed)
    fsync_dir(path.parent)
    shutil.rmtree(doomed)


def sync_filesystem(path: Path) -> None:
    """Flush every dirty page of the filesystem holding `path` (syncfs(2)), so RELEASE.json is
    never on disk before the files it vouches for. Falls back to sync(2)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc().syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def _libc():
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def stale_tmp_dirs(paths: Paths) -> list[Path]:
    if not paths.releases.is_dir():
        return []
    return sorted(p for p in paths.releases.iterdir() if p.name.startswith(TMP_PREFIX))


def tree_bytes(paths_: list[Path]) -> int:
    """Bytes that deleting all of `paths_` would free: an inode counts only when every one of its
    links lies inside them (hardlinks shared with a kept release or the uv cache free nothing)."""
    seen: dict[tuple[int, int], list[int]] = {}
    for top in paths_:
        for dirpath, dirnames, filenames in os.walk(top):
            for name in dirnames + filenames:
                try:
                    st = os.lstat(os.path.join(dirpath, name))
                except FileNotFoundError:
                    continue
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    seen[key][0] += 1
                else:
                    seen[key] = [1, st.st_nlink, st.st_blocks * 512]
            try:
                st = os.lstat(dirpath)
                seen.setdefault((st.st_dev, st.st_ino), [1, 1, st.st_blocks * 512])
            except FileNotFoundError:
                pass
    return sum(size for count, nlink, size in seen.values() if count >= nlink)
