"""Built releases: RELEASE.json metadata, completeness, and finding one by sha prefix."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

from deployer.errors import BadInput, OperationFailed, shown
from deployer.paths import PREFIX_RE, SHA_RE, Paths

METADATA = "RELEASE.json"
REVISION = "REVISION"
# Made at build time beside the exported tree; not part of the tree digest (they have their own).
BUILD_OUTPUTS = {"venv", "staticfiles", METADATA, REVISION}


def read_metadata(release: Path) -> dict | None:
    """RELEASE.json, or None when it is missing, unreadable or not what a build writes."""
    try:
        data = json.loads((release / METADATA).read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    return data if _well_formed(data) else None


def _well_formed(data: object) -> bool:
    """The fields the deployer reads have the types a build writes (a corrupted or hand-edited
    file is an incomplete release, never a traceback)."""
    if not isinstance(data, dict) or not isinstance(data.get("sha"), str):
        return False
    for key in ("built_at", "subject", "requirements_key", "tree_digest"):
        if key in data and not isinstance(data[key], str):
            return False
    if "build_seconds" in data and not isinstance(data["build_seconds"], (int, float, type(None))):
        return False
    digests = data.get("digests", {})
    if not isinstance(digests, dict) or not all(isinstance(v, str) for v in digests.values()):
        return False
    graph = data.get("migrations", {})
    if not isinstance(graph, dict):
        return False
    for key in ("leaves", "nodes"):
        nodes = graph.get(key, [])
        if not isinstance(nodes, list) or not all(
            isinstance(n, list) and len(n) == 2 and all(isinstance(part, str) for part in n) for n in nodes
        ):
            return False
    database = data.get("database", {})
    return isinstance(database, dict) and all(isinstance(v, str) for v in database.values())


def write_metadata(release: Path, data: dict) -> None:
    path = release / METADATA
    with open(path, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())


def _walk(top: Path, skip_top: set[str]):
    """(relative path, lstat) of every file and symlink under top, sorted, bytecode caches and
    the top-level names in skip_top left out."""
    for dirpath, dirnames, filenames in os.walk(top):
        rel_dir = os.path.relpath(dirpath, top)
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d not in skip_top]
            filenames = [f for f in filenames if f not in skip_top]
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            yield path, os.path.join(rel_dir, name), os.lstat(path)


def content_digest(top: Path, skip_top: set[str] = frozenset()) -> str:
    """sha256 over every file's path, mode and bytes (symlinks: their target). A same-size edit
    changes it. Used for the exported tree and staticfiles/ (small, and served as they are)."""
    digest = hashlib.sha256()
    for path, rel, st in _walk(top, skip_top):
        if stat.S_ISLNK(st.st_mode):
            body = os.readlink(path).encode()
        else:
            with open(path, "rb") as fh:
                body = hashlib.file_digest(fh, "sha256").digest()
        digest.update(f"{rel}\0{st.st_mode:o}\0".encode() + body + b"\n")
    return digest.hexdigest()


def shape_digest(top: Path) -> str:
    """sha256 over every file's path, size and mode. Used for venv/ (tens of thousands of files
    that uv installed from hashed wheels): a lost or resized file shows, at a tenth of a second."""
    digest = hashlib.sha256()
    for _path, rel, st in _walk(top, set()):
        digest.update(f"{rel}\0{st.st_size}\0{st.st_mode:o}\n".encode())
    return digest.hexdigest()


def digests(release: Path, shared_dirs: tuple[str, ...]) -> dict[str, str]:
    """What RELEASE.json vouches for, recomputed from the release directory."""
    return {
        "tree": content_digest(release, BUILD_OUTPUTS | set(shared_dirs)),
        "staticfiles": content_digest(release / "staticfiles"),
        "venv": shape_digest(release / "venv"),
    }


def legacy_tree_digest(release: Path, skip: set[str]) -> str:
    """The names/sizes/modes digest that releases built before content digests carry."""
    digest = hashlib.sha256()
    for _path, rel, st in _walk(release, BUILD_OUTPUTS | skip):
        digest.update(f"{rel}\0{st.st_size}\0{st.st_mode:o}\n".encode())
    return digest.hexdigest()


def problems(release: Path, shared_dirs: tuple[str, ...] = ()) -> list[str]:
    """Why a release directory is not a complete build (empty list: it is)."""
    meta = read_metadata(release)
    if meta is None:
        return [f"{METADATA} is missing, unreadable or malformed"]
    issues = []
    if meta.get("sha") != release.name:
        issues.append(f"{METADATA} names sha {shown(str(meta.get('sha')), 44)}, not {release.name}")
    try:
        if (release / REVISION).read_bytes().strip() != release.name.encode():
            issues.append(f"{REVISION} does not match the directory name")
    except OSError:
        issues.append(f"{REVISION} is missing")
    if not (release / "venv" / "bin" / "python").exists():
        issues.append("venv/bin/python is missing")
    if not (release / "staticfiles" / "staticfiles.json").is_file():
        issues.append("staticfiles/staticfiles.json is missing")
    if issues:
        return issues
    recorded = meta.get("digests")
    if recorded:
        actual = digests(release, shared_dirs)
        changed = [part for part in ("tree", "staticfiles", "venv") if recorded.get(part) != actual[part]]
        if changed:
            issues.append(f"its {', '.join(changed)} changed since it was built")
    elif meta.get("tree_digest") and legacy_tree_digest(release, set(shared_dirs)) != meta["tree_digest"]:
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
