"""The database a release uses, for any engine: what it has applied, and a backup of it
(docs/design.md §6.2, §14).

SQLite, with no DATABASE_URL in the env file, is read directly (migrations.applied: no Django,
a few milliseconds). Every other database is read through a release's own Django: its settings,
its driver and the env file's variables, in one short process (READER) that imports settings and
the database backend but not the apps (~0.5 s instead of ~1.5 s for `django.setup()`). Both
readers return the same set (tests/integration/test_postgres.py checks that they agree).

PostgreSQL backups are `pg_dump --format=custom`. The connection settings reach pg_dump as libpq
environment variables (PGHOST, PGPASSWORD, ...), never on its command line, and the reader hands
them to the deployer on a pipe; they are never printed, logged or recorded.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from deployer import migrations
from deployer.config import Config
from deployer.errors import BadInput, OperationFailed, one_line
from deployer.paths import Paths
from deployer.proc import clean_env, run, tail

MARKER = "@@deployer-database "
READER_TIMEOUT = 60
DUMP_TIMEOUT = 3600

# Runs in the release's venv, in its project dir, with DJANGO_SETTINGS_MODULE and the env file.
READER = r"""
import json, sys, warnings
warnings.simplefilter("ignore")  # "database access during app initialization": apps are not needed
try:
    from django.conf import settings
    from django.db import connections
    connection = connections["default"]
    with connection.cursor() as cursor:
        applied = []
        if "django_migrations" in connection.introspection.table_names(cursor):
            cursor.execute("SELECT app, name FROM django_migrations")
            applied = [[str(app), str(name)] for app, name in cursor.fetchall()]
    found = {"vendor": connection.vendor, "applied": applied, "name": str(settings.DATABASES["default"]["NAME"])}
    if connection.vendor == "postgresql":
        found["server_version"] = connection.pg_version
        found["params"] = {k: v for k, v in connection.get_connection_params().items() if isinstance(v, (str, int))}
except Exception as exc:
    print(f"{type(exc).__name__}: {' '.join(str(exc).split())}", file=sys.stderr)
    sys.exit(1)
print("@@deployer-database " + json.dumps(found), flush=True)
"""

# libpq's connection keywords and the environment variables that carry them to pg_dump.
LIBPQ_ENV = {
    "host": "PGHOST", "port": "PGPORT", "dbname": "PGDATABASE", "user": "PGUSER",
    "password": "PGPASSWORD", "passfile": "PGPASSFILE", "service": "PGSERVICE",
    "options": "PGOPTIONS", "application_name": "PGAPPNAME", "connect_timeout": "PGCONNECT_TIMEOUT",
    "sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT", "sslcert": "PGSSLCERT", "sslkey": "PGSSLKEY",
    "sslcrl": "PGSSLCRL", "channel_binding": "PGCHANNELBINDING", "gssencmode": "PGGSSENCMODE",
    "target_session_attrs": "PGTARGETSESSIONATTRS", "require_auth": "PGREQUIREAUTH",
}


@dataclass
class Database:
    """One reading of the database: its engine and the migrations it has applied."""

    vendor: str  # "sqlite", "postgresql", ...
    applied: set[migrations.Migration]
    name: str  # the SQLite file, or the database name
    sqlite_file: Path | None = None
    server_version: int | None = None  # PostgreSQL's server_version_num, e.g. 150018
    libpq_env: dict[str, str] = field(default_factory=dict, repr=False)  # holds the password

    @property
    def empty(self) -> bool:
        return not self.applied

    def describe(self) -> str:
        if self.sqlite_file is not None:
            return f"SQLite {self.sqlite_file}"
        where = self.libpq_env.get("PGHOST", "local socket")
        port = self.libpq_env.get("PGPORT")
        return f"{self.vendor} database {self.name} on {where}{':' + port if port else ''}"

    def has_data(self) -> bool:
        """Whether there is anything worth a backup (an empty database is a first deploy)."""
        if self.sqlite_file is not None:
            return migrations.exists(self.sqlite_file) and not self.empty
        return not self.empty


def uses_sqlite_file(meta: dict, env_values: dict[str, str]) -> Path | None:
    """The SQLite file the release recorded at build time, when the env file still selects it:
    no DATABASE_URL, and DJANGO_DB_PATH (if set) naming the same file. Else None: read through
    Django."""
    if env_values.get("DATABASE_URL", "").strip():
        return None
    db_file = migrations.database_path(meta)
    if db_file is None:
        return None
    override = env_values.get("DJANGO_DB_PATH", "").strip()
    if override and os.path.realpath(os.path.expanduser(override)) != str(db_file):
        return None
    return db_file


def read(config: Config, paths: Paths, env_values: dict[str, str], meta: dict, code: str) -> Database:
    """The database release `code`'s settings select, and what it has applied. `meta` is the
    RELEASE.json of the release being planned (its recorded SQLite file allows the fast path)."""
    db_file = uses_sqlite_file(meta, env_values)
    if db_file is not None:
        return Database("sqlite", migrations.applied(db_file), str(db_file), sqlite_file=db_file)
    return read_through_django(config, paths.release(code), env_values)


def read_through_django(config: Config, release: Path, env_values: dict[str, str]) -> Database:
    found = _run_reader(config, release, env_values)
    applied = {(app, name) for app, name in found.get("applied", [])}
    if found["vendor"] == "sqlite":
        db_file = Path(os.path.realpath(found["name"]))
        return Database("sqlite", applied, str(db_file), sqlite_file=db_file)
    params = found.get("params", {})
    libpq_env = {LIBPQ_ENV[key]: str(value) for key, value in params.items() if key in LIBPQ_ENV and str(value) != ""}
    return Database(found["vendor"], applied, found["name"], server_version=found.get("server_version"),
                    libpq_env=libpq_env)


def _run_reader(config: Config, release: Path, env_values: dict[str, str]) -> dict:
    env = clean_env({**env_values, "DJANGO_SETTINGS_MODULE": config.django.settings, "PYTHONDONTWRITEBYTECODE": "1"})
    what = f"reading the database through {release.name[:12]}'s Django"
    try:
        proc = subprocess.run(
            [str(release / "venv" / "bin" / "python"), "-c", READER],
            cwd=release / config.django.project_dir, env=env, stdin=subprocess.DEVNULL,
            capture_output=True, text=True, errors="replace", timeout=READER_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise OperationFailed(f"{what}: no answer within {READER_TIMEOUT}s", hint=_DATABASE_HINT) from None
    except OSError as exc:
        raise OperationFailed(f"{what}: cannot run the release's python: {exc.strerror or exc}") from None
    # stdout carries the connection settings (the password too): only stderr is ever shown.
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARKER)]
    if proc.returncode != 0 or not lines:
        reason = tail(proc.stderr, 1) or f"exited with status {proc.returncode}"
        raise OperationFailed(f"{what} failed: {reason}", hint=_DATABASE_HINT)
    return json.loads(lines[-1][len(MARKER):])


_DATABASE_HINT = "check DATABASE_URL in the env file and that the database server answers (`deployer check`)"


# --- backups ---------------------------------------------------------------------------------

def backup(config: Config, database: Database, backups: Path, label: str) -> Path | None:
    """A backup of the database under state/backups/ (0600 from creation), or None when there is
    nothing to back up. A kill never leaves a partial file under a backup's name."""
    if database.sqlite_file is not None:
        return migrations.backup(database.sqlite_file, backups, label)
    if database.vendor != "postgresql":
        raise OperationFailed(
            f"cannot back up a {database.vendor} database before migrating: only SQLite and PostgreSQL are supported",
            hint="take a backup yourself, then migrate with the release's manage.py",
        )
    return _pg_dump(config, database, backups, label)


DUMP_SUFFIX = ".dump"


def _pg_dump(config: Config, database: Database, backups: Path, label: str) -> Path:
    backups.mkdir(mode=0o700, parents=True, exist_ok=True)
    migrations.remove_partials(backups)
    target = migrations.free_name(backups, migrations.backup_stem(database.name, label), DUMP_SUFFIX)
    partial = backups / f".{target.name}{migrations.PARTIAL}"
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600))
    try:
        run([config.backups.pg_dump, "--format=custom", "--no-password", f"--file={partial}"],
            env=libpq_environment(database), what="pg_dump", timeout=DUMP_TIMEOUT)
        os.chmod(partial, 0o600)
        os.rename(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return target


def libpq_environment(database: Database) -> dict[str, str]:
    """The deployer's environment without its own PG* variables, plus the release's settings."""
    env = {k: v for k, v in clean_env().items() if not k.startswith("PG")}
    return {**env, **database.libpq_env}


def backup_suffix(database: Database) -> str:
    return migrations.SQLITE_SUFFIX if database.sqlite_file is not None else DUMP_SUFFIX


# --- pg_dump's version --------------------------------------------------------------------------

def pg_dump_major(config: Config) -> int:
    """The major version of the configured pg_dump ("pg_dump (PostgreSQL) 15.18 (Debian ...)")."""
    output = run([config.backups.pg_dump, "--version"], env=clean_env(), what="pg_dump --version", timeout=30)
    found = re.search(r"\)\s*(\d+)", output)
    if not found:
        raise OperationFailed(f"cannot read pg_dump's version from {one_line(output.strip()[:80])!r}")
    return int(found.group(1))


def server_major(database: Database) -> int:
    """PostgreSQL 10 and later: server_version_num // 10000 (150018 -> 15)."""
    version = database.server_version or 0
    return version // 10000 if version >= 100000 else version // 100


def require_new_enough_pg_dump(config: Config, database: Database) -> str:
    """pg_dump refuses a server newer than itself: find that out in `check`, not mid-deploy."""
    ours, theirs = pg_dump_major(config), server_major(database)
    if ours < theirs:
        raise BadInput(
            f"pg_dump {ours} is older than the PostgreSQL {theirs} server: backups would fail",
            hint=f"install postgresql-client-{theirs} or point backups.pg_dump at a pg_dump {theirs}",
        )
    return f"pg_dump {ours} >= server {theirs}"


# --- retention ----------------------------------------------------------------------------------

def backup_files(backups: Path) -> list[Path]:
    """Finished backups, newest first (partial files of a killed run are not backups)."""
    if not backups.is_dir():
        return []
    found = [p for p in backups.iterdir()
             if not p.name.startswith(".") and p.suffix in (migrations.SQLITE_SUFFIX, DUMP_SUFFIX) and p.is_file()]
    return sorted(found, key=lambda p: (p.stat().st_mtime_ns, p.name), reverse=True)


def expired_backups(backups: Path, keep: int) -> list[Path]:
    return backup_files(backups)[keep:]
