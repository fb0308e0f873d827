"""`deployer list [--json]`: releases, newest build first, with their state."""

from __future__ import annotations

import json
import os
import sys

from deployer import history, releases, standby
from deployer.config import Config
from deployer.paths import Paths, current_sha


def own_bytes(path) -> int:
    """Bytes only this release holds: files with a single link (hardlinks into the uv cache or
    another release are shared, so deleting this release would not free them)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:  # a prune running beside us
                continue
            if st.st_nlink == 1:
                total += st.st_blocks * 512
    return total


def rows(paths: Paths, config: Config | None = None) -> list[dict]:
    entries = history.read(paths)
    warm = standby.warm_standby(config, paths) if config is not None and config.service.standby else None
    live = current_sha(paths)
    previous = history.rollback_target(entries, live)
    failed = history.failed_smoke(entries)
    built = releases.complete(paths)
    out = []
    for sha in releases.by_build_time(built):
        meta = built[sha]
        if sha == live:
            state = "current"
        elif sha in failed:
            state = "failed-smoke"
        elif sha == previous:
            state = "previous"
        else:
            state = "built"
        out.append({
            "sha": sha,
            "subject": meta.get("subject", ""),
            "built_at": meta.get("built_at"),
            "build_seconds": meta.get("build_seconds"),
            "own_bytes": own_bytes(paths.release(sha)),
            "state": state,
            # The release a warm standby colour still runs: a rollback to it is a relink (§16).
            "standby": warm is not None and sha == warm.sha and sha != live,
            # What an orchestrator compares across servers before anything goes live (§13).
            "tree_digest": (meta.get("digests") or {}).get("tree") or meta.get("tree_digest"),
            "requirements_key": meta.get("requirements_key"),
        })
    return out


def main(config: Config, paths: Paths, as_json: bool) -> None:
    data = rows(paths, config)
    if as_json:
        json.dump({"config": str(config.path), "deploy_to": str(config.deploy_to), "releases": data}, sys.stdout, indent=2)
        print()
        return
    print(f"releases in {paths.releases} (config {config.path})")
    if not data:
        print("no releases built yet")
        return
    print(f"{'sha':12}  {'state':20}  {'built at':25}  {'build':>6}  {'own size':>9}  subject")
    for row in data:
        size = f"{row['own_bytes'] / 1e6:.1f} MB"
        seconds = f"{row['build_seconds']:.1f}s" if row["build_seconds"] is not None else "-"
        state = row["state"] + (" +standby" if row["standby"] else "")
        print(f"{row['sha'][:12]}  {state:20}  {row['built_at'] or '-':25}  {seconds:>6}  {size:>9}  {row['subject']}")
