"""The safety promise (docs/design.md §3, §6, §7): exit 1 means the live site was left as it was or
put back — schema included — and the deployer never misreads the state it finds."""

import json
import os
import signal
import sqlite3
import subprocess
import sys

import pytest

# These stories are the restart strategy (docs/design.md §6); standby has tests/integration/test_standby.py.
pytestmark = pytest.mark.strategy("restart")

MIGRATION = "0002_treatment_aftercare"


def applied(db, app="treatments"):
    with sqlite3.connect(db) as conn:
        return {name for (name,) in conn.execute("SELECT name FROM django_migrations WHERE app=?", (app,))}


def one_error_line(result):
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr, result.stderr
    assert lines[-1].startswith("deployer: error:"), result.stderr
    assert sum(line.startswith("deployer: error:") for line in lines) == 1, result.stderr
    return lines[-1]


# --- A: any failure after the switch switches back -------------------------------------------

def read_until(stream, marker: str) -> str:
    """Read a child's stderr until `marker` shows (step labels are printed before the step runs,
    without a newline)."""
    seen = ""
    while marker not in seen:
        char = stream.read(1)
        assert char, f"stream ended before {marker!r}:\n{seen}"
        seen += char
    return seen


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_operator_interrupting_the_restart_gets_the_previous_release_back(deployment, source_repo, signum):
    interrupt_the_restart(deployment, source_repo, signum)


def test_a_deployer_started_with_sigint_ignored_still_puts_the_previous_release_back(deployment, source_repo):
    """A background job of a non-interactive shell (`deployer activate … &` in a script) starts
    with SIGINT ignored, and Python then installs no KeyboardInterrupt handler of its own."""
    def ignore_sigint() -> None:  # in the child, before exec: inherited the way a background job inherits it
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    interrupt_the_restart(deployment, source_repo, signal.SIGINT, preexec_fn=ignore_sigint)


def interrupt_the_restart(deployment, source_repo, signum, preexec_fn=None) -> None:
    deployment.ok("deploy", "base")
    second = deployment.release("second")
    proc = subprocess.Popen([sys.executable, "-m", "deployer", "--config", str(deployment.config_file),
                             "activate", second], stderr=subprocess.PIPE, text=True, preexec_fn=preexec_fn)
    seen = read_until(proc.stderr, "restart service")
    proc.send_signal(signum)
    stderr = seen + proc.stderr.read()
    proc.wait(timeout=120)

    assert proc.returncode == 1, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("deployer: error:") and "interrupted" in last, stderr
    assert "Traceback" not in stderr
    assert f"{source_repo.sha('base')[:12]} is live again" in last
    assert deployment.current == source_repo.sha("base")
    assert deployment.healthz()["release"] == source_repo.sha("base")
    assert deployment.history()[-1]["result"] == "failed"
    assert "failed-smoke" not in deployment.ok("list").stdout  # an interrupt says nothing about the release


def test_a_restart_program_that_cannot_run_is_refused_before_anything_changes(deployment, source_repo):
    deployment.ok("deploy", "base")
    second = deployment.release("second")
    script = deployment.root / "restart.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)  # no execute bit
    deployment.write_config(service={"restart": str(script)})
    entries = len(deployment.history())

    result = deployment.deployer("activate", second)

    assert result.returncode == 2
    last = one_error_line(result)
    assert "restart.sh" in last and "not executable" in last
    assert deployment.current == source_repo.sha("base")
    assert deployment.healthz()["release"] == source_repo.sha("base")
    assert len(deployment.history()) == entries


# --- B: migrations and the switch-back --------------------------------------------------------

def test_a_switch_back_after_a_forward_migration_restores_the_schema(deployment, source_repo):
    deployment.ok("deploy", "visible")
    assert MIGRATION not in applied(deployment.database)

    result = deployment.deployer("deploy", "migration-no-boot")

    assert result.returncode == 1
    last = one_error_line(result)
    assert f"the database is back on {source_repo.sha('visible')[:12]}'s migrations" in last
    assert MIGRATION not in applied(deployment.database)
    assert deployment.current == source_repo.sha("visible")
    assert deployment.healthz()["release"] == source_repo.sha("visible")
    with sqlite3.connect(deployment.database) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_migrate_past_its_timeout_fails_and_the_schema_is_put_back(deployment, source_repo):
    """django.migrate_timeout: the aftercare migration applies, the next one sleeps past the
    timeout and is killed; that is a failed migrate like any other, so what it applied is undone."""
    deployment.ok("deploy", "visible")
    deployment.write_config(django={"project_dir": "app", "settings": "config.settings.production",
                                    "requirements": "app/requirements.txt", "migrate_timeout": 15})
    slow = deployment.release("slow-migration")

    result = deployment.deployer("activate", slow)

    assert result.returncode == 1, result.stderr
    last = one_error_line(result)
    assert "migrate --noinput: timed out after 15s" in last
    assert f"the live release is untouched: {source_repo.sha('visible')[:12]} is still live" in last
    assert f"the database is back on {source_repo.sha('visible')[:12]}'s migrations" in last
    assert MIGRATION not in applied(deployment.database) and "9002_takes_minutes" not in applied(deployment.database)
    assert deployment.current == source_repo.sha("visible")
    assert deployment.healthz()["release"] == source_repo.sha("visible")


def test_a_failed_rollback_with_migrate_reapplies_what_it_unapplied(deployment, source_repo):
    deployment.ok("deploy", "migration")
    broken = deployment.release("no-boot")  # based on `base`: does not know the migration

    result = deployment.deployer("rollback", "--to", broken, "--migrate")

    assert result.returncode == 1
    last = one_error_line(result)
    assert f"{source_repo.sha('migration')[:12]} is live again" in last
    assert MIGRATION in applied(deployment.database)
    assert deployment.current == source_repo.sha("migration")
    assert deployment.healthz()["release"] == source_repo.sha("migration")


def test_rolling_forward_with_rollback_to_applies_the_targets_pending_migrations(deployment, source_repo):
    deployment.ok("deploy", "visible")
    deployment.ok("deploy", "migration")
    deployment.ok("rollback", "--migrate")
    assert MIGRATION not in applied(deployment.database)

    result = deployment.ok("rollback", "--to", source_repo.sha("migration"))

    assert MIGRATION in applied(deployment.database)
    assert "database backed up to" in result.stderr
    assert deployment.healthz()["release"] == source_repo.sha("migration")
    assert deployment.page("/").count("visible change") == 1


def test_activate_of_an_older_release_refuses_when_the_database_is_ahead(deployment, source_repo):
    deployment.ok("deploy", "visible")
    deployment.ok("deploy", "migration")

    result = deployment.deployer("activate", source_repo.sha("visible"))

    assert result.returncode == 1
    last = one_error_line(result)
    assert f"treatments.{MIGRATION}" in last and "--migrate" in last
    assert deployment.current == source_repo.sha("migration")
    assert MIGRATION in applied(deployment.database)


# --- C: state the deployer must not misread ---------------------------------------------------

def put_in_place_of(path, kind: str) -> None:
    """What an operator's slip leaves where a symlink belongs (`cp -r`, `>`, a stray mkfifo)."""
    path.unlink()
    if kind == "directory":
        path.mkdir()
        (path / "index.html").write_text("copied by hand\n")
    elif kind == "regular file":
        path.write_text("written by hand\n")
    else:
        os.mkfifo(path)


def refused_up_front(result, what: str) -> str:
    """Exit 1, and the refusal is the only line: no step ran."""
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("deployer: error:") and what in lines[0] and "nothing was changed" in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("kind", ["directory", "regular file", "FIFO"])
def test_a_current_that_is_not_a_symlink_is_refused_before_the_first_step(deployment, source_repo, kind):
    """Someone replaced `current` by hand. Every command that would switch refuses before its
    first step: no migrate (the `migration` release has one pending), no backup, no build, no
    history line; `current` stays as it is and the service goes on serving what it served."""
    deployment.ok("deploy", "visible")
    migration = deployment.release("migration")
    entries = deployment.history()
    current = deployment.deploy_to / "current"
    put_in_place_of(current, kind)

    for args in (("activate", migration), ("rollback", "--to", migration), ("rollback",),
                 ("rollback", "--to", migration, "--migrate"), ("deploy", "second")):
        refused_up_front(deployment.deployer(*args), f"current is a {kind}, not a symlink")
        plan = deployment.deployer(*args, "--plan")
        assert plan.returncode == 1 and "REFUSED" in plan.stdout, plan.stdout + plan.stderr

    assert deployment.history() == entries
    assert MIGRATION not in applied(deployment.database)
    assert list((deployment.deploy_to / "state" / "backups").iterdir()) == []
    assert source_repo.sha("second") not in deployment.releases
    assert not current.is_symlink() and os.path.lexists(current)
    assert deployment.healthz()["release"] == source_repo.sha("visible")


@pytest.mark.strategy("standby")
def test_a_live_socket_link_that_is_a_file_is_refused_before_the_standby_starts(deployment, source_repo):
    deployment.ok("deploy", "visible")
    migration = deployment.release("migration")
    entries = deployment.history()
    put_in_place_of(deployment.deploy_to / "live.sock", "regular file")

    refused_up_front(deployment.deployer("activate", migration), "live.sock is a regular file, not a symlink")

    assert deployment.history() == entries
    assert MIGRATION not in applied(deployment.database)
    assert deployment.current == source_repo.sha("visible")
    status = json.loads(deployment.ok("status", "--json").stdout)
    assert [c for c, info in status["colours"].items() if info["running"]] == ["blue"]


@pytest.mark.parametrize("where", ["outside", "dangling"])
def test_rollback_from_a_current_that_points_at_no_release_goes_to_the_recorded_previous(deployment, source_repo, where, tmp_path):
    deployment.ok("deploy", "base")
    deployment.ok("deploy", "second")
    second = source_repo.sha("second")
    link = deployment.deploy_to / "current"
    link.unlink()
    if where == "outside":
        (tmp_path / "elsewhere" / second).mkdir(parents=True)
        link.symlink_to(tmp_path / "elsewhere" / second)
    else:
        link.symlink_to(f"releases/{'f' * 40}")

    deployment.ok("rollback")

    assert deployment.current == source_repo.sha("base")
    assert deployment.healthz()["release"] == source_repo.sha("base")


def point_current_at_no_release(deployment, where: str, tmp_path, sha: str) -> str | None:
    """`current` as a slip or a disk problem leaves it; returns its target (None: it is gone)."""
    link = deployment.deploy_to / "current"
    link.unlink()
    target = {"dangling": f"releases/{'f' * 40}", "outside": str(tmp_path / "elsewhere" / sha),
              "a file": f"releases/{sha}/RELEASE.json", "missing": None}[where]
    if where == "outside":
        (tmp_path / "elsewhere" / sha).mkdir(parents=True)
    if target is not None:
        link.symlink_to(target)
    return target


WHAT_CURRENT_IS = {"dangling": "current dangles", "outside": "current points outside releases/",
                   "a file": "current points at a file", "missing": "current is missing"}


@pytest.mark.parametrize("where", ["dangling", "outside", "a file", "missing"])
def test_a_rollback_with_no_release_in_current_and_none_before_refuses_and_names_the_repair(deployment, source_repo,
                                                                                             where, tmp_path):
    """Only `base` was ever live, and `current` no longer names it. Making `base` live again would
    be a repair, not a rollback: rollback refuses, changes nothing, says what `current` is, and
    names `deployer activate <base>`, which repairs it."""
    deployment.ok("deploy", "base")
    base = source_repo.sha("base")
    target = point_current_at_no_release(deployment, where, tmp_path, base)
    entries = deployment.history()

    result = deployment.deployer("rollback")

    assert result.returncode == 1
    last = one_error_line(result)
    assert WHAT_CURRENT_IS[where] in last and "nothing to roll back to" in last, last
    assert f"`deployer activate {base[:12]}`" in last and "repair" in last, last
    assert "is live" not in result.stderr
    assert deployment.history() == entries
    link = deployment.deploy_to / "current"
    assert (os.readlink(link) if link.is_symlink() else None) == target

    deployment.ok("activate", base[:12])

    assert deployment.current == base
    status = json.loads(deployment.ok("status", "--json").stdout)
    assert (status["current"], status["activation_finished"], status["health"]["serves_current"]) == (base, True, True)


def test_a_failed_activate_puts_back_a_current_that_named_no_release_and_says_so(deployment, source_repo, tmp_path):
    """`current` pointed outside releases/ and the operator's repair fails (the release cannot
    boot): the put-back restores that link as it was (it removed it before) and the last line says
    no release was live, never that one is live again."""
    deployment.ok("deploy", "base")
    no_boot = deployment.release("no-boot")
    target = point_current_at_no_release(deployment, "outside", tmp_path, source_repo.sha("base"))

    result = deployment.deployer("activate", no_boot)

    assert result.returncode == 1
    last = one_error_line(result)
    assert "no release was live before: current points outside releases/" in last and "as before this run" in last
    assert "live again" not in last
    assert os.readlink(deployment.deploy_to / "current") == target
    assert deployment.history()[-1]["result"] == "failed-smoke"


def test_release_of_the_live_sha_never_rebuilds_it_even_when_it_was_edited(deployment, source_repo):
    deployment.ok("deploy", "base")
    live = deployment.deploy_to / "releases" / source_repo.sha("base")
    inode = live.stat().st_ino
    settings = live / "app" / "config" / "settings" / "production.py"
    text = settings.read_text()
    settings.write_text(text.replace("DEBUG = False", "DEBUG = True ") if "DEBUG = False" in text else text[:-1] + "#")

    result = deployment.deployer("release", "base")

    assert result.returncode == 1
    assert "the live release" in one_error_line(result)
    assert live.stat().st_ino == inode
    assert deployment.healthz()["release"] == source_repo.sha("base")


def test_a_same_size_edit_inside_a_built_release_is_refused_at_activate(deployment, source_repo):
    deployment.ok("deploy", "base")
    second = deployment.release("second")
    css = deployment.deploy_to / "releases" / second / "app" / "static" / "css" / "site.css"
    css.write_text(css.read_text()[:-2] + "X\n")  # same size, other bytes

    result = deployment.deployer("activate", second)

    assert result.returncode == 1
    assert "tree changed since it was built" in one_error_line(result)
    assert deployment.current == source_repo.sha("base")


def test_a_prune_killed_while_deleting_is_finished_by_the_next_run(deployment, source_repo):
    deployment.ok("deploy", "base")
    second = deployment.release("second")
    releases = deployment.deploy_to / "releases"
    # What a kill -9 in the middle of prune's delete leaves: the release already renamed away
    # (never half-deleted under its own name), part of it gone.
    half = releases / f".tmp-discard-{second}-deadbeef"
    os.rename(releases / second, half)
    subprocess.run(["rm", "-rf", str(half / "venv" / "lib")], check=True)

    listed = deployment.ok("list", "--json")
    assert second not in {row["sha"] for row in json.loads(listed.stdout)["releases"]}

    result = deployment.ok("prune", "--keep", "1")

    assert "interrupted" in result.stderr
    assert deployment.releases == {source_repo.sha("base")}


# --- E: security ------------------------------------------------------------------------------

def test_a_database_replaced_by_a_symlink_is_refused_before_any_backup_or_migrate(deployment, source_repo, tmp_path):
    deployment.ok("deploy", "visible")
    migration = deployment.release("migration")
    db = deployment.database
    target = tmp_path / "elsewhere.sqlite3"
    os.rename(db, target)
    db.symlink_to(target)

    result = deployment.deployer("activate", migration)

    assert result.returncode == 1
    assert "not a regular file" in one_error_line(result)
    assert deployment.current == source_repo.sha("visible")
    assert MIGRATION not in applied(target)
    assert list((deployment.deploy_to / "state" / "backups").iterdir()) == []


def test_backups_and_state_are_private_from_the_start(deployment):
    deployment.ok("deploy", "visible")
    deployment.ok("deploy", "migration")
    state = deployment.deploy_to / "state"
    backups = list((state / "backups").iterdir())
    assert backups
    assert {oct(p.stat().st_mode & 0o777) for p in backups} == {oct(0o600)}
    assert oct(state.stat().st_mode & 0o777) == oct(0o700)
    assert oct((state / "backups").stat().st_mode & 0o777) == oct(0o700)


def test_credentials_in_the_repo_url_never_show_in_output(deployment):
    deployment.write_config(repo="https://deploy-bot:s3cr3t-t0ken@127.0.0.1:9/skinmenu.git")

    check = deployment.deployer("check")
    release = deployment.deployer("release", "main")

    assert "s3cr3t-t0ken" not in check.stdout + check.stderr
    assert "https://***@127.0.0.1:9/skinmenu.git" in check.stdout
    assert release.returncode == 1
    assert "s3cr3t-t0ken" not in release.stdout + release.stderr
