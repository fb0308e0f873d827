"""`deployer release <commit-ish>`: build releases/<sha> off to the side (docs/design.md §5)."""

from __future__ import annotations

import getpass
import os
import socket
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from deployer import __version__, django, envfile, git, hooks, releases, statics, venv
from deployer.config import Config
from deployer.errors import BadInput, OperationFailed
from deployer.paths import Paths, current_sha, discard, fsync_dir, remove_tree, stale_tmp_dirs, sync_filesystem
from deployer.steps import Progress, say

STEPS = 8


def release(
    config: Config, paths: Paths, ref: str, rebuild: bool = False, *,
    action: str = "release", attempt: hooks.Attempt | None = None,
) -> str:
    """Build `ref` (caller holds the deploy lock) and return its full sha. `action` is what the
    after_build hooks see as DEPLOYER_ACTION; `attempt` learns the sha for on_failure."""
    git.validate_ref(ref)
    python = venv.find_python(config.python)
    env_values = envfile.load(config.env_file, config.required_env)
    paths.ensure_dirs()
    _remove_stale_tmp(paths)

    progress = Progress(STEPS + hooks.count(config, "after_build"))
    started = time.monotonic()
    with progress.step("fetch mirror"):
        git.sync_mirror(paths, config.repo)
    with progress.step("resolve commit"):
        sha = git.resolve(paths, ref)
        if ref != sha:
            progress.note(f"{ref} is {sha}")
    if attempt is not None:
        attempt.sha = sha
    live = current_sha(paths)
    done = already_built(config, paths, sha, live, rebuild)
    if done:
        say(done)
        return sha

    tmp = paths.new_tmp_release(sha)
    tmp.mkdir(mode=0o755)
    try:
        meta = _build(config, paths, progress, sha, tmp, python, env_values, live)
        # In the new release, before RELEASE.json: a failing command leaves no release behind.
        hooks.run(config, "after_build", tmp, sha=sha, previous=live, action=action,
                  env_values=env_values, progress=progress)
        meta["build_seconds"] = round(time.monotonic() - started, 2)
        meta["steps"] = progress.durations
        with progress.step("write RELEASE.json"):
            meta["digests"] = releases.digests(tmp, config.shared_dirs)
            sync_filesystem(tmp)  # every file on disk before the metadata that vouches for it
            releases.write_metadata(tmp, meta)
            _move_into_place(paths, tmp, paths.release(sha))
    except BaseException:
        remove_tree(tmp)
        raise
    say(f"built {sha[:12]} in {meta['build_seconds']:.1f}s")
    return sha


def already_built(config: Config, paths: Paths, sha: str, live: str | None, rebuild: bool) -> str | None:
    """Why `sha` needs no build (the line to say), or None when it must be built. Refuses to
    rebuild the live release, and reports a live release that is not complete (shared with --plan)."""
    final = paths.release(sha)
    if sha == live:
        # Checked before anything else: the live release is never renamed away under gunicorn.
        if rebuild:
            raise BadInput(f"release {sha[:12]} is live; refusing to rebuild it", hint="activate another release first")
        issues = releases.problems(final, config.shared_dirs)
        if issues:
            raise OperationFailed(
                f"the live release {sha[:12]} is not complete: {'; '.join(issues)}",
                hint="activate or roll back to another release, then `deployer release --rebuild` this one",
            )
        return f"release {sha[:12]} is already built, complete and live; nothing to do"
    if final.exists() and not rebuild and not releases.problems(final, config.shared_dirs):
        return f"release {sha[:12]} is already built and complete; nothing to do (--rebuild to build it again)"
    return None


def _build(config, paths, progress, sha, tmp, python, env_values, live) -> dict:
    app_dir = tmp / config.django.project_dir
    with progress.step("export tree"):
        git.export(paths, sha, tmp)
        (tmp / releases.REVISION).write_text(sha + "\n")
        if not (app_dir / "manage.py").is_file():
            raise OperationFailed(f"{config.django.project_dir}/manage.py is not in commit {sha[:12]}")
        requirements = tmp / config.django.requirements
        if not requirements.is_file():
            raise OperationFailed(f"{config.django.requirements} is not in commit {sha[:12]}")

    with progress.step("create venv"):
        flags = venv.install_flags(config.install.find_links, config.install.offline)
        python_id = venv.python_identity(python)
        key = venv.requirements_key(requirements, python_id, flags)
        cache = config.install.cache_dir or paths.uv_cache
        reuse = venv_to_reuse(paths, cache, key, live)
        how = venv.build(tmp / "venv", python, requirements, cache, flags, reuse)
        if how == "installed":
            venv.keep(tmp / "venv", cache, key)
        venv.compile_tree(tmp / "venv", tmp / config.django.project_dir)

    with progress.step("link shared dirs"):
        clashing = [name for name in config.shared_dirs if (tmp / name).exists() or (tmp / name).is_symlink()]
        if clashing:
            raise OperationFailed(f"the commit has its own '{clashing[0]}', which shared_dirs would replace")
        for name in config.shared_dirs:
            (paths.shared / name).mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.join("..", "..", "shared", name), tmp / name)

    staticfiles = tmp / "staticfiles"
    staticfiles.mkdir()
    live_static = paths.release(live) / "staticfiles" if live else None
    if live_static:
        statics.seed_from(live_static, staticfiles)
    tasks = django.BuildTasks(config, tmp, django.environment(config, env_values))
    try:
        with progress.step("django checks"):
            graph = tasks.wait_for("checks")
        with progress.step("collectstatic"):
            tasks.wait_for("collectstatic")
            static_count = statics.verify(staticfiles)
            if live_static:
                statics.dedupe_against(live_static, staticfiles)
    finally:
        tasks.close()

    return {
        "sha": sha,
        "app": config.app,
        "subject": git.subject(paths, sha),
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "built_by": f"{getpass.getuser()}@{socket.gethostname()}",
        "deployer_version": __version__,
        "python": python_id.split()[0],
        "requirements_key": key,
        "venv": how,
        "migrations": {"leaves": graph["leaves"], "nodes": graph["nodes"]},
        "database": graph["database"],
        "static_files": static_count,
    }


def venv_to_reuse(paths: Paths, cache: Path, key: str, live: str | None) -> Path | None:
    """The venv of a built release with the same requirements and interpreter (the live one
    first, then the newest), else the one kept for that key beside uv's cache."""
    built = releases.complete(paths)
    order = ([live] if live in built else []) + releases.by_build_time(built)
    for sha in order:
        if built[sha].get("requirements_key") == key:
            return paths.release(sha) / "venv"
    return venv.kept_venv(cache, key)


def _move_into_place(paths: Paths, tmp: Path, final: Path) -> None:
    if final.exists():
        discard(paths, final)  # --rebuild of a release that is not live
    tmp.rename(final)
    fsync_dir(paths.releases)


def _remove_stale_tmp(paths: Paths) -> None:
    for stale in stale_tmp_dirs(paths):
        say(f"removing {stale.name}, left by an interrupted build")
        remove_tree(stale)


def main(config: Config, paths: Paths, ref: str, rebuild: bool) -> None:
    sha = release(config, paths, ref, rebuild)
    print(sha, file=sys.stdout)
