"""Built releases: RELEASE.json metadata, completeness, and finding one by sha prefix."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from deployer.errors import BadInput, OperationFailed, shown
from deployer.paths import PREFIX_RE, SHA_RE, Paths

METADATA = "RELEASE.json"
REVISION = "REVISION"
# Made at build time beside the exported tree; not part of the tree digest.
BUILD_OUTPUTS = {"venv", "staticfiles", METADATA, REVISION}


def read_metadata(release: Path) -> dict | None:
    try:
        data = json.loads((release / METADATA).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def write_metadata(release: Path, data: dict) -> None:
    path = release / METADATA
    with open(path, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())


def tree_digest(release: Path, skip: set[str]) -> str:
    """A digest of the exported tree's names, sizes and modes (bytecode caches excluded).

    Cheap enough for every activate, and it catches a release that lost or changed files after
    it was built."""
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(release):
        rel_dir = os.path.relpath(dirpath, release)
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d not in BUILD_OUTPUTS and d not in skip]
            filenames = [f for f in filenames if f not in BUILD_OUTPUTS and f not in skip]
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            st = os.lstat(os.path.join(dirpath, name))
            digest.update(f"{os.path.join(rel_dir, name)}\0{st.st_size}\0{st.st_mode:o}\n".encode())
    return digest.hexdigest()


def problems(release: Path, shared_dirs: tuple[str, ...] = ()) -> list[str]:
    """Why a release directory is not a complete build (empty list: it is)."""
    meta = read_metadata(release)
    if meta is None:
        return [f"{METADATA} is missing or unreadable"]
    issues = []
    if meta.get("sha") != release.name:
        issues.append(f"{METADATA} names sha {meta.get('sha')!r}, not {release.name}")
    try:
        if (release / REVISION).read_text().strip() != release.name:
            issues.append(f"{REVISION} does not match the directory name")
    except FileNotFoundError:
        issues.append(f"{REVISION} is missing")
    if not (release / "venv" / "bin" / "python").exists():
        issues.append("venv/bin/python is missing")
    if not (release / "staticfiles" / "staticfiles.json").is_file():
        issues.append("staticfiles/staticfiles.json is missing")
    if meta.get("tree_digest") and tree_digest(release, set(shared_dirs)) != meta["tree_digest"]:
        issues.append("the exported tree changed since it was built")
    return issues


def complete(paths: Paths) -> dict[str, dict]:
    """sha -> metadata for every complete release (RELEASE.json present and naming it)."""
    found = {}
    if not paths.releases.is_dir():
        return found
    for entry in paths.releases.iterdir():
        if SHA_RE.fullmatch(entry.name):
            meta = read_metadata(entry)
            if meta and meta.get("sha") == entry.name:
                found[entry.name] = meta
    return found


def by_build_time(releases: dict[str, dict]) -> list[str]:
    """Shas, newest build first."""
    return sorted(releases, key=lambda sha: releases[sha].get("built_at", ""), reverse=True)


def validate_prefix(text: str) -> str:
    """A sha or a prefix of one: 4 to 40 lowercase hex digits, nothing else."""
    candidate = text.lower()
    if not PREFIX_RE.fullmatch(candidate):
        raise BadInput(
            f"{shown(text)} is not a sha or sha prefix (4 to 40 hex digits)",
            hint="see `deployer list` for the built releases",
        )
    return candidate


def find(paths: Paths, text: str) -> str:
    """The full sha of the one built release matching a sha or unique prefix."""
    prefix = validate_prefix(text)
    names = [p.name for p in paths.releases.iterdir()] if paths.releases.is_dir() else []
    matches = [name for name in names if SHA_RE.fullmatch(name) and name.startswith(prefix)]
    if not matches:
        raise BadInput(f"no release matches {shown(text)}", hint="build it first with `deployer release <commit>`")
    if len(matches) > 1:
        raise BadInput(f"{shown(text)} is ambiguous: {', '.join(m[:12] for m in sorted(matches))}")
    return matches[0]


def require_complete(paths: Paths, sha: str, shared_dirs: tuple[str, ...]) -> dict:
    release = paths.release(sha)
    issues = problems(release, shared_dirs)
    if issues:
        raise OperationFailed(
            f"release {sha[:12]} is not complete: {'; '.join(issues)}",
            hint=f"rebuild it with `deployer release --rebuild {sha}`",
        )
    return read_metadata(release) or {}
