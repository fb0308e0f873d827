"""rollback: the previously live release from history, one relink, migration-aware (§7)."""

import sqlite3
import pytest

# These stories are the restart strategy (docs/design.md §6); standby has tests/integration/test_standby.py.
pytestmark = pytest.mark.strategy("restart")


def applied(db, app):
    with sqlite3.connect(db) as conn:
        return {name for (name,) in conn.execute("SELECT name FROM django_migrations WHERE app=?", (app,))}


def test_rollback_goes_back_to_the_previous_live_release(deployment, source_repo):
    deployment.ok("deploy", "base")
    deployment.ok("deploy", "second")
    deployment.release("third")  # built later, never live: not a rollback target

    result = deployment.ok("rollback")

    base = source_repo.sha("base")
    assert deployment.current == base
    assert deployment.healthz()["release"] == base
    assert "[1/6] verify" in result.stderr and "[6/6] record history" in result.stderr
    assert deployment.history()[-1]["action"] == "rollback"


def test_repeated_rollbacks_walk_back_through_history(deployment, source_repo):
    for ref in ("base", "second", "third"):
        deployment.ok("deploy", ref)

    deployment.ok("rollback")
    assert deployment.current == source_repo.sha("second")
    deployment.ok("rollback")
    assert deployment.current == source_repo.sha("base")
    nothing = deployment.deployer("rollback")
    assert nothing.returncode == 1
    assert "no release to roll back to" in nothing.stderr
    assert deployment.current == source_repo.sha("base")


def test_rollback_never_targets_a_release_that_failed_its_smoke_test(deployment, source_repo):
    deployment.ok("deploy", "base")
    deployment.ok("deploy", "second")
    assert deployment.deployer("deploy", "no-boot").returncode == 1
    assert deployment.current == source_repo.sha("second")

    deployment.ok("rollback")

    assert deployment.current == source_repo.sha("base")
    assert deployment.healthz()["release"] == source_repo.sha("base")


def test_rollback_to_a_named_release(deployment, source_repo):
    deployment.ok("deploy", "base")
    third = deployment.release("third")
    deployment.ok("deploy", "second")

    deployment.ok("rollback", "--to", third[:9])

    assert deployment.healthz()["release"] == third


def test_rollback_refuses_when_the_database_is_ahead_then_migrate_unapplies(deployment, source_repo):
    deployment.ok("deploy", "visible")
    deployment.ok("deploy", "migration")
    assert "0002_treatment_aftercare" in applied(deployment.database, "treatments")
    # Data written while the new release was live must survive the rollback.
    with sqlite3.connect(deployment.database) as conn:
        conn.execute("INSERT INTO django_session (session_key, session_data, expire_date) "
                     "VALUES ('kept-across-rollback', 'x', '2999-01-01 00:00:00')")

    refused = deployment.deployer("rollback")

    assert refused.returncode == 1
    assert "treatments.0002_treatment_aftercare" in refused.stderr
    assert "--migrate" in refused.stderr
    assert deployment.current == source_repo.sha("migration")

    result = deployment.ok("rollback", "--migrate")

    assert deployment.current == source_repo.sha("visible")
    assert deployment.healthz()["release"] == source_repo.sha("visible")
    assert "0002_treatment_aftercare" not in applied(deployment.database, "treatments")
    assert "database backed up to" in result.stderr
    with sqlite3.connect(deployment.database) as conn:
        assert conn.execute("SELECT count(*) FROM django_session WHERE session_key='kept-across-rollback'").fetchone() == (1,)


def test_rollback_force_switches_despite_the_database_being_ahead(deployment, source_repo):
    deployment.ok("deploy", "visible")
    deployment.ok("deploy", "migration")

    result = deployment.ok("rollback", "--force")

    assert "--force" in result.stderr
    assert deployment.healthz()["release"] == source_repo.sha("visible")
    assert "0002_treatment_aftercare" in applied(deployment.database, "treatments")


def test_migrate_and_force_together_are_bad_usage(deployment):
    result = deployment.deployer("rollback", "--migrate", "--force")
    assert result.returncode == 2
