"""Running a release's own Django: its venv, its settings, the env file's variables."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from deployer.config import Config
from deployer.errors import OperationFailed
from deployer.proc import clean_env, run, tail

# The build's Django work in ONE process of the release's venv (booting Wagtail costs ~0.6 s):
# checks, the migration graph that activate and rollback read later, then collectstatic. Each
# phase ends with a marker line so the deployer can time and name it as its own step.
MARKER = "@@deployer "
BUILD_TASKS = """
import json, os, django
django.setup()
from django.conf import settings
from django.core.management import call_command
from django.db.migrations.loader import MigrationLoader
call_command("check", deploy=True, fail_level="WARNING")
try:
    call_command("makemigrations", check=True, dry_run=True, verbosity=1)
except SystemExit as exc:
    if exc.code:
        raise SystemExit("makemigrations --check: the models have changes without a migration")
loader = MigrationLoader(None, ignore_no_migrations=True)
db = settings.DATABASES["default"]
print("@@deployer checks", json.dumps({
    "leaves": sorted(loader.graph.leaf_nodes()),
    "nodes": sorted(set(loader.graph.nodes) | set(loader.disk_migrations)),
    # The SQLite file lets activate read the applied set without Django; for other engines only
    # the engine and the database name (never host, user or password: RELEASE.json is not secret).
    "database": {"engine": db["ENGINE"],
                 "name": os.path.realpath(str(db["NAME"])) if "sqlite3" in db["ENGINE"] else str(db["NAME"])},
}), flush=True)
call_command("collectstatic", interactive=False, verbosity=0)
print("@@deployer collectstatic {}", flush=True)
"""


def environment(config: Config, env_values: dict[str, str], **extra: str) -> dict[str, str]:
    return clean_env({**env_values, "DJANGO_SETTINGS_MODULE": config.django.settings, **extra})


def manage(config: Config, release: Path, env: dict[str, str], *args: str, what: str | None = None,
           timeout: float | None = None) -> str:
    """`manage.py ARGS` in the release; past `timeout` seconds it is killed and fails as timed out."""
    app_dir = release / config.django.project_dir
    return run(
        [str(release / "venv" / "bin" / "python"), "manage.py", *args],
        cwd=app_dir,
        env=env,
        what=what or f"manage.py {' '.join(args[:2])}",
        timeout=timeout,
    )


class BuildTasks:
    """The running BUILD_TASKS process; `wait_for(phase)` returns that phase's JSON payload."""

    def __init__(self, config: Config, release: Path, env: dict[str, str]) -> None:
        self.output: list[str] = []
        self.proc = subprocess.Popen(
            [str(release / "venv" / "bin" / "python"), "-c", BUILD_TASKS],
            cwd=release / config.django.project_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def wait_for(self, phase: str) -> dict:
        for line in self.proc.stdout:
            if line.startswith(MARKER):
                name, _, payload = line[len(MARKER):].partition(" ")
                if name == phase:
                    return json.loads(payload)
            else:
                self.output.append(line)
        code = self.proc.wait()
        raise OperationFailed(f"{phase} exited with status {code}", details=tail("".join(self.output)))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
