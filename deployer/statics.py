"""Static files across releases (docs/design.md §5.7): keep the old release's hashed assets reachable."""

from __future__ import annotations

import filecmp
import json
import os
from pathlib import Path

from deployer.errors import OperationFailed

MANIFEST = "staticfiles.json"


def manifest_paths(staticfiles: Path) -> dict[str, str]:
    try:
        data = json.loads((staticfiles / MANIFEST).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    paths = data.get("paths") if isinstance(data, dict) else None
    return paths if isinstance(paths, dict) else {}


def seed_from(live: Path, new: Path) -> int:
    """Hardlink the live release's hashed files into the new staticfiles/ before collectstatic,
    so pages the old release rendered keep finding their assets after the switch."""
    count = 0
    for hashed in set(manifest_paths(live).values()):
        src = live / hashed
        dst = new / hashed
        if not _inside(src, live) or not src.is_file() or dst.exists():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.link(src, dst)
        count += 1
    return count


def verify(staticfiles: Path) -> int:
    """staticfiles.json exists and every hashed file it names is there."""
    if not (staticfiles / MANIFEST).is_file():
        raise OperationFailed(f"collectstatic wrote no {MANIFEST}: is ManifestStaticFilesStorage configured?")
    paths = manifest_paths(staticfiles)
    if not paths:
        raise OperationFailed(f"{MANIFEST} lists no files")
    missing = [hashed for hashed in paths.values() if not (staticfiles / hashed).is_file()]
    if missing:
        raise OperationFailed(f"{MANIFEST} names {len(missing)} missing file(s), e.g. {missing[0]}")
    return len(paths)


def dedupe_against(reference: Path, new: Path) -> int:
    """Replace files identical to the reference release's same-named file by hardlinks to it."""
    linked = 0
    for dirpath, _dirnames, filenames in os.walk(new):
        for name in filenames:
            path = Path(dirpath) / name
            ref = reference / path.relative_to(new)
            try:
                a, b = path.lstat(), ref.lstat()
            except FileNotFoundError:
                continue
            if a.st_ino == b.st_ino or a.st_size != b.st_size or not ref.is_file() or path.is_symlink():
                continue
            if filecmp.cmp(path, ref, shallow=False):
                tmp = path.with_name(f".{name}.link")
                os.link(ref, tmp)
                os.replace(tmp, path)
                linked += 1
    return linked


def _inside(path: Path, root: Path) -> bool:
    return os.path.realpath(path).startswith(os.path.realpath(root) + os.sep)
