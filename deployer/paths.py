"""The deploy_to layout of DESIGN §1, and the few filesystem primitives built on it."""

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
        for path in (self.releases, self.shared, self.state, self.backups):
            path.mkdir(parents=True, exist_ok=True)


def current_sha(paths: Paths) -> str | None:
    """The sha `current` points at, or None when there is no live release."""
    try:
        target = os.readlink(paths.current)
    except FileNotFoundError:
        return None
    except OSError:
        return None  # not a symlink: switch refuses to touch it
    name = Path(target).name
    return name if SHA_RE.fullmatch(name) else None


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path)


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
