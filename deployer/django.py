"""Running a release's own Django: its venv, its settings, the env file's variables."""

from __future__ import annotations

import json
from pathlib import Path

from deployer.config import Config
from deployer.errors import OperationFailed
from deployer.proc import clean_env, run

# Runs inside the release's venv after the checks: what activate and rollback need to know about
# the release's migrations and database without booting Django again.
INSPECT = """
import json, os
from django.conf import settings
from django.db.migrations.loader import MigrationLoader
loader = MigrationLoader(None, ignore_no_migrations=True)
db = settings.DATABASES["default"]
print(json.dumps({
    "leaves": sorted(loader.graph.leaf_nodes()),
    "nodes": sorted(set(loader.graph.nodes) | set(loader.disk_migrations)),
    "database": {"engine": db["ENGINE"], "name": os.path.realpath(str(db["NAME"]))},
}))
"""

CHECKS = """
from django.core.management import call_command
call_command("check", deploy=True, fail_level="WARNING")
try:
    call_command("makemigrations", check=True, dry_run=True, verbosity=1)
except SystemExit as exc:
    if exc.code:
        raise SystemExit("makemigrations --check: the models have changes without a migration")
"""


def environment(config: Config, env_values: dict[str, str], **extra: str) -> dict[str, str]:
    return clean_env({**env_values, "DJANGO_SETTINGS_MODULE": config.django.settings, **extra})


def manage(config: Config, release: Path, env: dict[str, str], *args: str, what: str | None = None) -> str:
    app_dir = release / config.django.project_dir
    return run(
        [str(release / "venv" / "bin" / "python"), "manage.py", *args],
        cwd=app_dir,
        env=env,
        what=what or f"manage.py {' '.join(args[:2])}",
    )


def python(config: Config, release: Path, env: dict[str, str], code: str, what: str) -> str:
    app_dir = release / config.django.project_dir
    setup = "import django\ndjango.setup()\n"
    return run([str(release / "venv" / "bin" / "python"), "-c", setup + code], cwd=app_dir, env=env, what=what)


def run_checks(config: Config, release: Path, env: dict[str, str]) -> None:
    python(config, release, env, CHECKS, "check --deploy / makemigrations --check")


def inspect(config: Config, release: Path, env: dict[str, str]) -> dict:
    out = python(config, release, env, INSPECT, "migration graph")
    try:
        return json.loads(out.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise OperationFailed("could not read the release's migration graph", details=out[-2000:])
