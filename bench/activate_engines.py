#!/usr/bin/env python3
"""Activate with no pending migration, SQLite against PostgreSQL, in the same run (issue 9).

    make bench                          # runs bench/deploy_bench.py, then this
    .venv/bin/python bench/activate_engines.py --runs 7

In a scratch dir under /tmp: one source repository made from this working tree's app/ (a base
commit and one that changes a CSS line), two deploy roots served by scripts/local-service, one
on SQLite and one on a PostgreSQL server this script starts itself (initdb + pg_ctl, as in the
tests: tests/integration/postgres_server.py). Both build the same two commits; then activate
alternates between them RUNS times per engine, interleaved, so load falls on both alike. Neither
switch has a migration to apply, which is the common deploy. For each it records the command's
wall time and its "migrate" step (SQLite: the table read straight from the file; PostgreSQL:
one process of the release's Django reads it). For reference it also times what activate ran
on PostgreSQL before issue 9 made it migration-aware: `manage.py migrate --noinput` with
nothing to apply. The table goes to stdout and into docs/benchmarks-database.md; the raw numbers into
bench/results/.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(REPO / "bench"))

import deploy_bench as base  # noqa: E402
import postgres_server  # noqa: E402

DOC = REPO / "docs" / "benchmarks-database.md"


class World:
    """One deploy root with its own config, env file and gunicorn port."""

    def __init__(self, scratch: base.Scratch, name: str, database_url: str | None) -> None:
        self.name = name
        self.root = scratch.root / name
        self.port = base.free_port()
        self.env_file = scratch.root / f"{name}.env"
        self.config = scratch.root / f"{name}.yml"
        env = {**scratch.env_values, "DJANGO_CSRF_TRUSTED_ORIGINS": f"http://127.0.0.1:{self.port}",
               "WAGTAILADMIN_BASE_URL": f"http://127.0.0.1:{self.port}"}
        if database_url:
            env["DATABASE_URL"] = database_url
        self.env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        self.env_file.chmod(0o600)
        self.env = env
        text = scratch.config.read_text()
        for old, new in ((str(scratch.new_root), str(self.root)), ("deploy_to: new", f"deploy_to: {name}"),
                         (f"127.0.0.1:{scratch.new_port}", f"127.0.0.1:{self.port}"),
                         (str(scratch.env_file), str(self.env_file)), ("env_file: skinmenu.env", f"env_file: {name}.env")):
            text = text.replace(old, new)
        self.config.write_text(text)
        self.deployer = [*scratch.deployer, "--config", str(self.config)]

    def run(self, *args: str) -> tuple[float, subprocess.CompletedProcess]:
        return base.timed([*self.deployer, *args], env=base.clean_env(), what=f"{self.name}: deployer {' '.join(args)}")

    def stop(self) -> None:
        if (self.root / "run" / "gunicorn.pid").exists():
            subprocess.run([sys.executable, str(base.LOCAL_SERVICE), "--root", str(self.root), "--bind",
                            f"127.0.0.1:{self.port}", "--env-file", str(self.env_file), "stop"],
                           capture_output=True, timeout=120)


def bare_migrate(world: World, sha: str) -> float:
    """What activate ran on PostgreSQL before issue 9: `migrate` with nothing to apply."""
    release = world.root / "releases" / sha
    env = base.clean_env({**world.env, "DJANGO_SETTINGS_MODULE": base.SETTINGS})
    seconds, _ = base.timed([str(release / "venv" / "bin" / "python"), "manage.py", "migrate", "--noinput"],
                            cwd=release / "app", env=env, what="manage.py migrate")
    return seconds


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def measure(runs: int, scratch_dir: Path) -> dict:
    scratch = base.Scratch(scratch_dir, 1, None, None)
    shas = scratch.make_source()[:2]
    scratch.write_config()
    server = postgres_server.start()
    try:
        db = server.create_database("skinmenu_bench")
        worlds = [World(scratch, "sqlite", None), World(scratch, "postgresql", server.url(db))]
        try:
            for world in worlds:
                for sha in shas:
                    world.run("release", sha)
                world.run("activate", shas[0])  # the first deploy migrates the empty database
                base.wait_served(world.port, shas[0])
            rows: dict[str, list[dict]] = {w.name: [] for w in worlds}
            for i in range(runs):
                target = shas[(i + 1) % 2]
                for world in worlds:
                    seconds, proc = world.run("activate", target)
                    steps = base.parse_steps(proc.stderr)
                    if "already matches" not in proc.stderr:
                        raise base.BenchError(f"{world.name}: activate had migrations to apply:\n{proc.stderr}")
                    rows[world.name].append({"seconds": seconds, "migrate": steps.get("migrate"), "steps": steps})
                    base.log(f"     {world.name:<10} activate {target[:12]}: {seconds:.2f}s (migrate step {steps.get('migrate', 0):.2f}s)")
            before = [bare_migrate(worlds[1], shas[0]) for _ in range(runs)]
        finally:
            for world in worlds:
                world.stop()
    finally:
        server.stop()
    return {
        "runs": runs, "rows": rows, "pg_migrate_noop_seconds": before,
        "postgresql_server": server.bindir.parent.name,
        "figures": {name: {"activate": summary([r["seconds"] for r in values]),
                           "migrate_step": summary([r["migrate"] for r in values])} for name, values in rows.items()}
        | {"postgresql_before_issue_9": {"migrate_step": summary(before)}},
    }


def table(results: dict) -> str:
    f = results["figures"]
    sq, pg, old = f["sqlite"], f["postgresql"], f["postgresql_before_issue_9"]

    def cell(s: dict) -> str:
        return f"{s['median']:.2f} s ({s['min']:.2f}–{s['max']:.2f})"

    delta = pg["activate"]["median"] - sq["activate"]["median"]
    return "\n".join([
        "| engine | activate, no pending migration | its migration check |",
        "|---|---|---|",
        f"| SQLite (read from the file) | {cell(sq['activate'])} | {cell(sq['migrate_step'])} |",
        f"| PostgreSQL {results['postgresql_server']} (read through the release's Django) | {cell(pg['activate'])} | {cell(pg['migrate_step'])} |",
        f"| PostgreSQL before issue 9 (`migrate` always ran) | | {cell(old['migrate_step'])} |",
        "",
        f"Medians of {results['runs']} runs each, interleaved, min–max in brackets. PostgreSQL costs "
        f"{delta:+.2f} s per activate over SQLite; against what activate ran on PostgreSQL before "
        f"(a no-op `migrate`, which boots all of Django and Wagtail), the check is "
        f"{old['migrate_step']['median'] - pg['migrate_step']['median']:.2f} s faster.",
    ])


def write_doc(results: dict, command: str) -> None:
    DOC.write_text(
        "# Benchmark: activate by database engine\n\n"
        f"Written by `{command}` (part of `make bench`) on {results['date']}; raw numbers in "
        f"`bench/results/{results['json_name']}`. What is measured and how: the docstring of "
        "bench/activate_engines.py.\n\n"
        f"{table(results)}\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    if postgres_server.missing_reason():
        print(f"activate_engines: {postgres_server.missing_reason()}", file=sys.stderr)
        return 1
    scratch_dir = Path(tempfile.mkdtemp(prefix="skinmenu-bench-engines-", dir="/tmp"))
    started = time.monotonic()
    try:
        results = measure(args.runs, scratch_dir)
    finally:
        shutil.rmtree(scratch_dir, ignore_errors=True)
    stamp = datetime.now(timezone.utc)
    results["date"] = stamp.strftime("%Y-%m-%d %H:%M UTC")
    results["json_name"] = f"activate-engines-{stamp.strftime('%Y%m%dT%H%M%SZ')}.json"
    base.RESULTS_DIR.mkdir(exist_ok=True)
    (base.RESULTS_DIR / results["json_name"]).write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    if not args.no_doc:
        write_doc(results, shlex.join(["bench/activate_engines.py", *sys.argv[1:]]))
    base.log(f"done in {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
