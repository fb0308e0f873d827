"""activate and deploy: migrate, switch in one rename, restart, smoke test or switch back (§6)."""

import json
import os

import pytest

# These stories are the restart strategy (docs/design.md §6); standby has tests/integration/test_standby.py.
pytestmark = pytest.mark.strategy("restart")


def test_deploy_makes_the_commit_live_and_healthz_reports_it(deployment, source_repo):
    deployment.ok("deploy", "base")
    assert deployment.healthz()["release"] == source_repo.sha("base")

    result = deployment.ok("deploy", "visible")

    visible = source_repo.sha("visible")
    assert deployment.current == visible
    assert os.readlink(deployment.deploy_to / "current") == f"releases/{visible}"  # relative
    assert deployment.healthz() == {"status": "ok", "release": visible, "database": "ok"}
    assert "now with a visible change" in deployment.page("/")
    for number, name in enumerate(["verify release", "migrate", "switch current to", "restart service",
                                   "smoke test", "record history"], 1):
        assert f"[{number}/6] {name}" in result.stderr
    entry = deployment.history()[-1]
    assert (entry["action"], entry["from"], entry["to"], entry["result"]) == (
        "deploy", source_repo.sha("base"), visible, "ok")
    assert {"time", "user", "host", "seconds", "steps"} <= set(entry)
    assert {"migrate", "restart service", "smoke test"} <= set(entry["steps"])


def test_activate_backs_up_and_migrates_only_when_migrations_are_pending(deployment, source_repo):
    deployment.ok("deploy", "visible")
    backups = deployment.deploy_to / "state" / "backups"
    assert not list(backups.glob("*.sqlite3"))

    result = deployment.ok("deploy", "migration")

    assert "database backed up to" in result.stderr
    [backup] = backups.glob("*.sqlite3")
    assert oct(backup.stat().st_mode & 0o777) == "0o600"
    import sqlite3
    applied = {row[0] for row in sqlite3.connect(deployment.database).execute(
        "SELECT name FROM django_migrations WHERE app='treatments'")}
    assert "0002_treatment_aftercare" in applied
    in_backup = {row[0] for row in sqlite3.connect(backup).execute(
        "SELECT name FROM django_migrations WHERE app='treatments'")}
    assert "0002_treatment_aftercare" not in in_backup


def test_activate_refuses_an_incomplete_release(deployment, source_repo):
    deployment.ok("deploy", "base")
    sha = deployment.release("second")
    (deployment.deploy_to / "releases" / sha / "RELEASE.json").unlink()

    result = deployment.deployer("activate", sha)

    assert result.returncode == 1
    assert "not complete" in result.stderr
    assert deployment.current == source_repo.sha("base")


def test_activate_refuses_a_release_whose_tree_changed_after_the_build(deployment, source_repo):
    deployment.ok("deploy", "base")
    sha = deployment.release("second")
    (deployment.deploy_to / "releases" / sha / "app" / "config" / "urls.py").write_text("# tampered\n")

    result = deployment.deployer("activate", sha[:10])

    assert result.returncode == 1
    assert "tree changed" in result.stderr
    assert deployment.current == source_repo.sha("base")


def test_activate_reverts_when_the_new_release_cannot_boot(deployment, source_repo):
    deployment.ok("deploy", "base")
    base = source_repo.sha("base")

    result = deployment.deployer("deploy", "no-boot")

    assert result.returncode == 1
    assert "step 'restart service' failed" in result.stderr
    assert "this release cannot boot" in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("deployer: error:") and "is live again" in last and "failed-smoke" in last
    assert deployment.current == base
    assert deployment.healthz()["release"] == base
    entry = deployment.history()[-1]
    assert (entry["to"], entry["result"]) == (source_repo.sha("no-boot"), "failed-smoke")
    listed = json.loads(deployment.ok("list", "--json").stdout)["releases"]
    states = {row["sha"]: row["state"] for row in listed}
    assert states[source_repo.sha("no-boot")] == "failed-smoke"
    assert states[base] == "current"


def test_activate_reverts_when_the_smoke_test_fails(deployment, source_repo):
    """The service restarts fine but the site does not answer what the smoke test expects."""
    deployment.ok("deploy", "base")
    base = source_repo.sha("base")
    second = deployment.release("second")
    # A smoke test that looks through a path prefix that does not exist: every check 404s.
    deployment.write_config(smoke={"url": f"http://127.0.0.1:{deployment.port}/nowhere",
                                   "check_static": False, "timeout": 2})

    result = deployment.deployer("activate", second)

    assert result.returncode == 1
    assert "step 'smoke test' failed" in result.stderr
    assert "404" in result.stderr
    assert deployment.current == base
    assert deployment.healthz()["release"] == base
    assert deployment.history()[-1]["result"] == "failed-smoke"


def test_activating_the_live_release_is_a_no_op(deployment, source_repo):
    deployment.ok("deploy", "base")
    before = len(deployment.history())

    result = deployment.ok("activate", source_repo.sha("base")[:8])

    assert "already live" in result.stderr
    assert len(deployment.history()) == before


def test_activate_refuses_when_current_is_not_a_symlink(deployment, source_repo):
    sha = deployment.release("base")
    (deployment.deploy_to / "current").mkdir()

    result = deployment.deployer("activate", sha)

    assert result.returncode == 1
    assert "not a symlink" in result.stderr
    assert (deployment.deploy_to / "current").is_dir()


@pytest.mark.parametrize("kill_after", [0.2, 0.6, 1.0, 1.6])
def test_kill_9_during_activate_leaves_current_on_a_complete_release(deployment, source_repo, kill_after, wait_until):
    import signal
    import subprocess
    import sys
    import time

    from deployer import releases

    deployment.ok("deploy", "base")
    second = deployment.release("second")
    proc = subprocess.Popen([sys.executable, "-m", "deployer", "--config", str(deployment.config_file),
                             "activate", second], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(kill_after)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # A service restart the killed run had begun goes on by itself (systemctl is only a
    # client of systemd; here the local stand-in is orphaned): let it finish.
    assert wait_until(lambda: subprocess.run(
        ["pgrep", "-f", f"local-service --root {deployment.deploy_to} "], capture_output=True).returncode != 0)

    live = deployment.current
    assert live in (source_repo.sha("base"), second)
    assert releases.problems(deployment.deploy_to / "releases" / live, ("db", "media")) == []
    # The lock died with the process: the operator can go on at once.
    deployment.ok("activate", second)
    assert deployment.healthz()["release"] == second


def test_an_activation_killed_after_the_switch_is_finished_by_the_next_activate(deployment, source_repo):
    from deployer import switch
    from deployer.paths import Paths

    deployment.ok("deploy", "base")
    second = deployment.release("second")
    switch.point_current_at(Paths(deployment.deploy_to), second)  # where a kill -9 would leave it

    status = json.loads(deployment.ok("status", "--json").stdout)
    assert status["current"] == second
    assert status["activation_finished"] is False
    assert "never finished" in deployment.ok("status").stdout

    result = deployment.ok("activate", second)

    assert "never finished; finishing it" in result.stderr
    assert deployment.healthz()["release"] == second
    assert deployment.history()[-1]["to"] == second
    assert json.loads(deployment.ok("status", "--json").stdout)["activation_finished"] is True
