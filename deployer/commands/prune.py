"""`deployer prune --keep N`: delete old releases, never a needed one, and database backups beyond
the newest `backups.keep` (docs/design.md §8, §14)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from deployer import database, history, releases, smoke, venv
from deployer.config import Config
from deployer.errors import BadInput
from deployer.paths import SHA_RE, TMP_PREFIX, Paths, current_sha, discard, discard_dir, remove_tree, stale_tmp_dirs, tree_bytes
from deployer.steps import say


def in_use(paths: Paths, proc: Path = Path("/proc")) -> set[str]:
    """Releases a running process still uses, through its cwd or executable. The service user's
    gunicorn hides those links from the deploy user (EACCES); its command line, which anyone
    may read, names the release its ExecStart resolved (releases/<sha>/venv/bin/python)."""
    prefix = os.path.realpath(paths.releases) + os.sep
    found = set()
    for entry in proc.iterdir() if proc.is_dir() else []:
        if not entry.name.isdigit():
            continue
        hidden = False
        for link in ("cwd", "exe"):
            try:
                target = os.readlink(entry / link)
            except PermissionError:
                hidden = True
                continue
            except OSError:
                continue
            if target.startswith(prefix):
                found.add(target[len(prefix):].split(os.sep, 1)[0])
        if hidden:
            found |= _named_in_cmdline(entry, prefix)
    return {sha for sha in found if SHA_RE.fullmatch(sha)}


def _named_in_cmdline(entry: Path, prefix: str) -> set[str]:
    try:
        argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return set()
    return {arg[len(prefix):].split(os.sep, 1)[0] for arg in argv if arg.startswith(prefix)}


def served(config: Config) -> str | None:
    """The release the live site reports on /healthz, whatever `current` says."""
    release = smoke.health(config.smoke).get("release")
    return release if isinstance(release, str) and SHA_RE.fullmatch(release) else None


def select(
    built: dict[str, dict], keep: int, protected: set[str], failed: set[str]
) -> list[str]:
    """The releases to delete: all but the `keep` newest good builds and the protected ones.
    Releases that failed their smoke test do not take one of the `keep` places."""
    newest_first = releases.by_build_time(built)
    good = [sha for sha in newest_first if sha not in failed]
    kept = set(good[:keep]) | protected
    return [sha for sha in newest_first if sha not in kept]


@dataclass
class Selection:
    """What a prune deletes and keeps (shared by the real run, --dry-run and --plan)."""

    built: dict[str, dict]
    doomed: list[str]
    stale: list[Path]
    busy: set[str]  # releases a running process uses (other than current)
    protected: set[str]
    freed: int
    backups: list[Path]  # database backups beyond the newest backups.keep
    venvs: list[Path]  # venvs kept beside uv's cache whose requirements no remaining release has


def choose(config: Config, paths: Paths, keep: int) -> Selection:
    if keep < 1:
        raise BadInput(f"--keep must be at least 1, got {keep}")
    entries = history.read(paths)
    live = current_sha(paths)
    protected = {sha for sha in (live, history.rollback_target(entries, live)) if sha}
    busy = in_use(paths) | {sha for sha in (served(config),) if sha}
    protected |= busy
    built = releases.complete(paths)
    doomed = select(built, keep, protected, history.failed_smoke(entries))
    stale = stale_tmp_dirs(paths)
    old_backups = database.expired_backups(paths.backups, config.backups.keep)
    venvs = _unused_kept_venvs(config.install.cache_dir or paths.uv_cache,
                               {meta.get("requirements_key") for sha, meta in built.items() if sha not in doomed})
    freed = tree_bytes([paths.release(sha) for sha in doomed] + stale + venvs) + sum(_size(p) for p in old_backups)
    return Selection(built, doomed, stale, (busy & set(built)) - {live}, protected, freed, old_backups, venvs)


def _unused_kept_venvs(cache: Path, needed: set[str | None]) -> list[Path]:
    store = venv.kept_venvs(cache)
    if not store.is_dir():
        return []
    return sorted(p for p in store.iterdir() if p.name not in needed and not p.name.startswith(TMP_PREFIX))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def main(config: Config, paths: Paths, keep: int, dry_run: bool) -> None:
    chosen = choose(config, paths, keep)
    verb = "would remove" if dry_run else "removing"
    for sha in chosen.doomed:
        say(f"{verb} {sha[:12]}  {chosen.built[sha].get('subject', '')}")
    for tmp in chosen.stale:
        say(f"{verb} {tmp.name} (interrupted build)")
    for backup in chosen.backups:
        say(f"{verb} backup {backup.name} (keeping the newest {config.backups.keep})")
    for kept in chosen.venvs:
        say(f"{verb} kept venv {kept.name[:12]} (no remaining release has its requirements)")
    for sha in sorted(chosen.busy):
        say(f"keeping {sha[:12]}: a running process uses it")
    if not dry_run:
        for sha in chosen.doomed:
            discard(paths, paths.release(sha))
        for tmp in chosen.stale:
            remove_tree(tmp)
        for backup in chosen.backups:
            backup.unlink(missing_ok=True)
        for kept in chosen.venvs:
            discard_dir(kept)  # a build copying from it fails and installs afresh, never half a venv
    print(f"{'would free' if dry_run else 'freed'} {counts(chosen)}", file=sys.stdout)


def counts(chosen: Selection) -> str:
    return (f"{human(chosen.freed)} ({len(chosen.doomed)} release(s), {len(chosen.stale)} temp dir(s), "
            f"{len(chosen.backups)} backup(s), {len(chosen.venvs)} kept venv(s))")


def human(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    size = n / 1024
    for unit in ("KiB", "MiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"
