"""PostgreSQL (docs/design.md §14): the app on DATABASE_URL, the deployer's migration awareness
through the release's own Django, pg_dump backups, rollback's refuse / --migrate / --force, and a
restore from a backup, all against a real server the suite started (conftest: `postgres`)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from pathlib import Path

import postgres_server

from deployer import database, migrations
from deployer.config import load_config
from deployer.envfile import load as load_env
from deployer.paths import Paths


def applied(postgres, db: str, app: str = "treatments") -> set[str]:
    rows = postgres.psql(f"SELECT name FROM django_migrations WHERE app = '{app}'", db)
    return set(rows.splitlines())


def columns(postgres, db: str) -> set[str]:
    rows = postgres.psql("SELECT column_name FROM information_schema.columns "
                         "WHERE table_name = 'treatments_treatmentpage'", db)
    return set(rows.splitlines())


def backups(d) -> list[Path]:
    folder = d.deploy_to / "state" / "backups"
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []


def write_a_page_title(postgres, db: str, title: str) -> None:
    """Data written by the site before a deploy: a Wagtail page renamed in place."""
    postgres.psql(f"UPDATE wagtailcore_page SET title = '{title}' WHERE depth = 2", db)


def page_titles(postgres, db: str) -> set[str]:
    return set(postgres.psql("SELECT title FROM wagtailcore_page WHERE depth = 2", db).splitlines())


def test_a_first_deploy_on_an_empty_postgresql_database_migrates_it_without_a_backup(
        tmp_path, postgres, source_repo, release_python, uv_cache):
    from conftest import Deployment
    d = Deployment(tmp_path, source_repo, release_python, uv_cache)
    db = postgres.create_database("first_deploy")
    d.use_database_url(postgres.url(db))
    try:
        result = d.ok("deploy", "base")
        assert "database backed up" not in result.stderr
        assert backups(d) == []
        assert d.healthz() == {"status": "ok", "release": source_repo.sha("base"), "database": "ok"}
        assert "0001_initial" in applied(postgres, db)
        assert not (d.deploy_to / "shared" / "db" / "skinmenu.sqlite3").exists()  # SQLite was not used
        meta = json.loads((d.deploy_to / "releases" / source_repo.sha("base") / "RELEASE.json").read_text())
        assert meta["database"] == {"engine": "django.db.backends.postgresql", "name": db}
    finally:
        d.stop()


def test_deploying_a_migration_takes_a_pg_dump_backup_first(pg_deployment, source_repo, postgres):
    d, db = pg_deployment, pg_deployment.pg_database
    d.ok("deploy", "base")
    assert "already matches" in d.ok("deploy", "visible").stderr
    assert backups(d) == []  # nothing changed, nothing backed up

    result = d.ok("deploy", "migration")
    assert "database backed up" in result.stderr
    [dump] = backups(d)
    assert dump.suffix == ".dump" and dump.name.startswith(f"{db}-")
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600
    listing = subprocess.run([postgres_server.client("pg_restore"), "--list", str(dump)],
                             capture_output=True, text=True, check=True).stdout
    assert "TABLE public treatments_treatmentpage" in listing
    assert "0002_treatment_aftercare" in applied(postgres, db)
    assert "aftercare" in columns(postgres, db)
    assert d.healthz()["release"] == source_repo.sha("migration")


def test_rollback_over_a_postgresql_migration_is_refused_then_unapplied_with_migrate(pg_deployment, source_repo, postgres):
    d, db = pg_deployment, pg_deployment.pg_database
    d.ok("deploy", "visible")
    d.ok("deploy", "migration")
    write_a_page_title(postgres, db, "Written before the rollback")

    refused = d.deployer("rollback")
    assert refused.returncode == 1
    assert "0002_treatment_aftercare" in refused.stderr and "--migrate" in refused.stderr
    assert d.current == source_repo.sha("migration") and "aftercare" in columns(postgres, db)

    d.ok("rollback", "--migrate")
    assert d.current == source_repo.sha("visible")
    assert d.healthz() == {"status": "ok", "release": source_repo.sha("visible"), "database": "ok"}
    assert "aftercare" not in columns(postgres, db)
    assert "0002_treatment_aftercare" not in applied(postgres, db)
    assert page_titles(postgres, db) == {"Written before the rollback"}
    assert len(backups(d)) == 2  # before the migrate, and before the unapply


def test_rollback_with_force_keeps_the_postgresql_migration(pg_deployment, source_repo, postgres):
    d, db = pg_deployment, pg_deployment.pg_database
    d.ok("deploy", "visible")
    d.ok("deploy", "migration")
    d.ok("rollback", "--force")
    assert d.current == source_repo.sha("visible")
    assert "aftercare" in columns(postgres, db)
    assert d.healthz()["database"] == "ok"


def test_a_failed_postgresql_migration_leaves_the_live_release_untouched(pg_deployment, source_repo, postgres):
    d, db = pg_deployment, pg_deployment.pg_database
    d.ok("deploy", "base")
    before = applied(postgres, db)
    failed = d.deployer("deploy", "bad-migration")
    assert failed.returncode == 1
    assert "this migration fails halfway" in failed.stderr
    assert "the live release is untouched" in failed.stderr
    assert d.current == source_repo.sha("base")
    assert d.healthz() == {"status": "ok", "release": source_repo.sha("base"), "database": "ok"}
    assert applied(postgres, db) == before  # PostgreSQL rolled the migration back as a whole
    assert "doomed" not in columns(postgres, db)
    assert len(backups(d)) == 1


def test_a_backup_restores_with_pg_restore_clean_as_the_server_guide_says(pg_deployment, source_repo, postgres):
    """docs/server-guide.md: stop the service, pg_restore --clean --if-exists, start it."""
    d, db = pg_deployment, pg_deployment.pg_database
    d.ok("deploy", "base")
    seed = subprocess.run(
        [str(d.deploy_to / "current" / "venv" / "bin" / "python"), "manage.py", "seed_demo_content"],
        cwd=d.deploy_to / "current" / "app", capture_output=True, text=True,
        env={**load_env(d.env_file, ()), "DJANGO_SETTINGS_MODULE": "config.settings.production",
             "PATH": os.environ["PATH"]})
    assert seed.returncode == 0, seed.stderr
    write_a_page_title(postgres, db, "Before the backup")
    d.ok("deploy", "migration")
    [dump] = backups(d)
    write_a_page_title(postgres, db, "After the backup")

    d.stop()
    started = time.monotonic()
    database_url = load_env(d.env_file, ())["DATABASE_URL"]  # the guide's command, word for word
    restore = subprocess.run([postgres_server.client("pg_restore"), "--clean", "--if-exists", "--no-owner",
                              "--single-transaction", "--dbname", database_url, str(dump)],
                             capture_output=True, text=True)
    seconds = time.monotonic() - started
    assert restore.returncode == 0, restore.stderr
    assert page_titles(postgres, db) == {"Before the backup"}
    assert "aftercare" not in columns(postgres, db)  # the schema from before the migration
    treatments = int(postgres.psql("SELECT count(*) FROM treatments_treatmentpage", db))
    assert treatments > 0
    started = time.monotonic()
    again = dump.with_name("again.dump")
    subprocess.run([postgres_server.client("pg_dump"), "--format=custom", f"--file={again}"],
                   env=postgres.env(db), check=True)
    dump_seconds = time.monotonic() - started
    print(f"\nFIGURE pg backup/restore on the demo data: {treatments} treatment pages, "
          f"dump {dump.stat().st_size / 1024:.0f} KiB, pg_dump {dump_seconds:.2f} s, pg_restore {seconds:.2f} s")


def test_the_password_never_reaches_a_command_line_a_log_or_the_metadata(pg_deployment, source_repo, postgres, tmp_path):
    d = pg_deployment
    seen = tmp_path / "pg_dump-calls"
    wrapper = tmp_path / "pg_dump"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"printf '%s\\n' \"$*\" \"password-in-env=${{PGPASSWORD:+yes}}\" >> {seen}\n"
        f"exec {postgres_server.client('pg_dump')} \"$@\"\n")
    wrapper.chmod(0o755)
    d.write_config(backups={"pg_dump": str(wrapper), "keep": 10})
    outputs = [d.ok("deploy", "base"), d.ok("deploy", "migration"), d.ok("check"),
               d.ok("list"), d.ok("status"), d.ok("rollback", "--migrate"),
               d.ok("activate", source_repo.sha("migration"), "--plan", "--json")]
    assert "password-in-env=yes" in seen.read_text()
    secret = postgres.password
    assert secret not in seen.read_text()  # pg_dump's arguments
    for result in outputs:
        assert secret not in result.stdout + result.stderr
    for path in [*(d.deploy_to / "state").rglob("*"), *(d.deploy_to / "releases").glob("*/RELEASE.json")]:
        if path.is_file() and path.suffix != ".dump":
            assert secret.encode() not in path.read_bytes(), path


def test_check_reports_the_server_and_refuses_an_older_pg_dump(pg_deployment, postgres, tmp_path):
    d = pg_deployment
    d.ok("deploy", "base")
    report = d.ok("check").stdout
    major = int(postgres.psql("SHOW server_version_num")) // 10000
    assert f"answers (PostgreSQL {major})" in report and f">= server {major}" in report

    old = tmp_path / "old-pg_dump"
    old.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n")
    old.chmod(0o755)
    d.write_config(backups={"pg_dump": str(old)})
    result = d.deployer("check")
    assert result.returncode == 1
    assert f"pg_dump 9 is older than the PostgreSQL {major} server" in result.stdout


def test_an_unreachable_database_is_refused_before_anything_changes(pg_deployment, source_repo, postgres):
    d = pg_deployment
    d.ok("deploy", "base")
    d.release("migration")
    d.use_database_url(postgres.url(d.pg_database, password="not-the-password"))
    result = d.deployer("activate", source_repo.sha("migration"))
    assert result.returncode == 1
    assert "password authentication failed" in result.stderr
    assert result.stderr.count("deployer: error:") == 1 and "Traceback" not in result.stderr
    assert d.current == source_repo.sha("base")
    assert "FAIL  database" in d.deployer("check").stdout


def test_the_sqlite_fast_path_and_the_django_reader_agree(deployment, source_repo):
    d = deployment
    d.ok("deploy", "migration")
    config = load_config(d.config_file)
    env_values = load_env(d.env_file, config.required_env)
    release = Paths(config.deploy_to).release(source_repo.sha("migration"))
    through_django = database.read_through_django(config, release, env_values)
    assert through_django.vendor == "sqlite" and through_django.sqlite_file == d.database.resolve()
    direct = migrations.applied(d.database)
    assert through_django.applied == direct and ("treatments", "0002_treatment_aftercare") in direct


def test_the_postgresql_reader_sees_what_psql_sees(pg_deployment, source_repo, postgres):
    d = pg_deployment
    d.ok("deploy", "migration")
    config = load_config(d.config_file)
    found = database.read_through_django(config, Paths(config.deploy_to).release(source_repo.sha("migration")),
                                         load_env(d.env_file, config.required_env))
    rows = postgres.psql("SELECT app || ' ' || name FROM django_migrations", d.pg_database).splitlines()
    assert found.vendor == "postgresql"
    assert found.applied == {tuple(row.split(" ", 1)) for row in rows}
    assert found.libpq_env["PGPASSWORD"] == postgres.password  # unescaped from the URL


def test_prune_keeps_the_newest_backups_and_says_what_it_removed(deployment):
    d = deployment
    d.write_config(backups={"keep": 2})
    folder = d.deploy_to / "state" / "backups"
    folder.mkdir(parents=True)
    names = [f"skinmenu-2026010{i}T000000Z-before-activate-abc{i}.{'dump' if i % 2 else 'sqlite3'}" for i in range(1, 6)]
    for age, name in enumerate(reversed(names)):
        path = folder / name
        path.write_bytes(b"x" * 100)
        os.utime(path, (time.time() - 100 * age, time.time() - 100 * age))
    (folder / ".unfinished.dump.partial").write_bytes(b"x")
    planned = d.ok("prune", "--keep", "5", "--plan", "--json")
    assert json.loads(planned.stdout)["prune"]["backups"] == [names[2], names[1], names[0]]
    result = d.ok("prune", "--keep", "5")
    for name in names[:3]:
        assert f"removing backup {name}" in result.stderr + result.stdout
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == sorted(names[3:])
    assert "3 backup(s)" in result.stdout
