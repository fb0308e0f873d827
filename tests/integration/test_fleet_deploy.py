"""Deploys across servers (docs/design.md §13): every server serves the new release, or none does.

Two deploy roots ("servers") reached over a private sshd on 127.0.0.1, sharing one database as
app servers share one PostgreSQL server; the real CLI with an orchestrator config drives them.
A server cut off from the network during the build or the switch is tested on real machines in
tests/e2e/test_e2e_fleet.py.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time

import pytest

from fleet_setup import REMOTE_DEPLOYER, Orchestrator, lock_of, one_error_line, settled


def _both_on(deployment, second, sha: str) -> None:
    for d in (deployment, second):
        assert d.current == sha
        assert d.healthz()["release"] == sha


def _deploy_base_on_both(orchestrator) -> None:
    """Both servers on `base` (built in parallel by the orchestrator: the quickest way there)."""
    result = orchestrator.run("deploy", "base")
    assert result.returncode == 0, result.stderr


def _last(d) -> dict:
    return d.history()[-1]


def test_deploy_puts_the_new_release_live_on_every_server_with_one_deploy_id(orchestrator, deployment, second):
    _deploy_base_on_both(orchestrator)
    sha = deployment.source.sha("second")

    result = orchestrator.run("deploy", "second")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == sha
    _both_on(deployment, second, sha)
    first, other = _last(deployment), _last(second)
    assert first["result"] == other["result"] == "ok" and first["to"] == other["to"] == sha
    assert first["deploy_id"] == other["deploy_id"] and first["deploy_id"]
    for name in ("app1", "app2"):  # each server's step lines, prefixed by its name
        assert f"[{name}] [1/8] fetch mirror" in result.stderr
        assert f"[{name}] " in result.stderr and "smoke test" in result.stderr
    assert "left to the migrations server" in result.stderr  # app2 did not migrate
    assert lock_of(deployment) is None and lock_of(second) is None


def test_deploy_migrates_once_on_the_migrations_server_with_a_backup(orchestrator, deployment, second):
    _deploy_base_on_both(orchestrator)
    sha = deployment.source.sha("migration")

    result = orchestrator.run("deploy", "migration")
    assert result.returncode == 0, result.stderr
    _both_on(deployment, second, sha)
    app1 = [line for line in result.stderr.splitlines() if line.startswith("[app1]")]
    app2 = [line for line in result.stderr.splitlines() if line.startswith("[app2]")]
    assert any("applying" in line or "applied" in line for line in app1), "\n".join(app1)
    assert any("left to the migrations server" in line for line in app2)
    assert list((deployment.deploy_to / "state" / "backups").glob("*before-activate*"))
    assert not (second.deploy_to / "state" / "backups").exists() or not list(
        (second.deploy_to / "state" / "backups").iterdir())


def test_a_smoke_failure_on_one_server_puts_every_server_back_and_marks_the_sha_everywhere(
        orchestrator, deployment, second):
    _deploy_base_on_both(orchestrator)
    base, sha = deployment.source.sha("base"), deployment.source.sha("second")
    smoke = {"url": f"http://127.0.0.1:{second.port}", "check_static": False, "timeout": 5,
             "paths": ["/no-such-page-on-app2/"]}
    second.write_config(smoke=smoke)  # only app2's smoke test fails

    result = orchestrator.run("deploy", "second")
    assert result.returncode == 1, result.stderr
    line = one_error_line(result)
    assert line.startswith("deployer: error: app2: "), line
    assert "smoke test" in line
    _both_on(deployment, second, base)
    for d in (deployment, second):
        entry = _last(d)
        assert entry["to"] == sha and entry["result"] == "failed-smoke", entry
    assert _last(deployment)["deploy_id"] == _last(second)["deploy_id"]
    assert "app2 failed" in _last(deployment)["reason"]
    assert "servers agree" in result.stderr
    assert lock_of(deployment) is None and lock_of(second) is None


def test_a_release_that_cannot_boot_on_one_server_never_reaches_any_public(orchestrator, deployment, second):
    _deploy_base_on_both(orchestrator)
    base = deployment.source.sha("base")
    sha = orchestrator.run("release", "second").stdout.strip()
    # app2's env file loses a variable its settings need at boot, after the build.
    second.env_file.write_text(second.env_file.read_text().replace("DJANGO_SECURE_SSL_REDIRECT=false\n",
                                                                   "DJANGO_SECURE_SSL_REDIRECT=maybe\n"))
    result = orchestrator.run("activate", sha[:10])
    assert result.returncode == 1, result.stderr
    assert one_error_line(result).startswith("deployer: error: app2: ")
    _both_on(deployment, second, base)
    assert _last(deployment)["result"] == "failed-smoke"


def test_rollback_across_servers_goes_back_on_every_server(orchestrator, deployment, second):
    _deploy_base_on_both(orchestrator)
    assert orchestrator.run("deploy", "second").returncode == 0
    base = deployment.source.sha("base")

    result = orchestrator.run("rollback")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == base
    _both_on(deployment, second, base)
    assert _last(deployment)["action"] == _last(second)["action"] == "rollback"
    assert _last(deployment)["deploy_id"] == _last(second)["deploy_id"]


def test_rollback_refuses_when_servers_disagree_unless_told_where_to(orchestrator, deployment, second):
    _deploy_base_on_both(orchestrator)
    deployment.ok("deploy", "third")
    second.ok("deploy", "second")
    second.ok("deploy", "third")  # both on third; app1 came from base, app2 from second
    base = deployment.source.sha("base")

    refused = orchestrator.run("rollback")
    assert refused.returncode == 1
    line = one_error_line(refused)
    assert "servers disagree on what to roll back to" in line and "--to" in line
    assert deployment.current == second.current == deployment.source.sha("third")

    result = orchestrator.run("rollback", "--to", base[:10])
    assert result.returncode == 0, result.stderr
    _both_on(deployment, second, base)


def test_plan_across_servers_shows_each_servers_steps_and_changes_nothing(orchestrator, deployment, second):
    _deploy_base_on_both(orchestrator)
    result = orchestrator.run("deploy", "second", "--plan")
    assert result.returncode == 0, result.stderr
    assert "[app1] [1] " in result.stdout and "[app2] [1] " in result.stdout
    assert "migrations run once, on app1" in result.stdout
    data = json.loads(orchestrator.run("deploy", "second", "--plan", "--json").stdout)
    assert [server["name"] for server in data["servers"]] == ["app1", "app2"]
    assert all(server["plan"]["steps"] for server in data["servers"])
    assert deployment.source.sha("second") not in deployment.releases | second.releases


def test_list_and_prune_run_on_every_server(orchestrator, deployment, second):
    _deploy_base_on_both(orchestrator)
    for ref in ("second", "third"):
        assert orchestrator.run("deploy", ref).returncode == 0
    listed = orchestrator.run("list")
    assert listed.returncode == 0, listed.stderr
    third = deployment.source.sha("third")
    assert f"[app1] {third[:12]}  current" in listed.stdout and f"[app2] {third[:12]}  current" in listed.stdout

    pruned = orchestrator.run("prune", "--keep", "1")
    assert pruned.returncode == 0, pruned.stderr
    for d in (deployment, second):  # the live release and the rollback target stay
        assert d.releases == {third, deployment.source.sha("second")}


@pytest.mark.strategy("restart")
def test_with_the_restart_strategy_servers_switch_in_batches_and_all_go_back_on_failure(
        orchestrator, deployment, second):
    _deploy_base_on_both(orchestrator)
    base = deployment.source.sha("base")
    ok = orchestrator.run("deploy", "second")
    assert ok.returncode == 0, ok.stderr
    _both_on(deployment, second, deployment.source.sha("second"))

    second.write_config(smoke={"url": f"http://127.0.0.1:{second.port}", "check_static": False, "timeout": 5,
                               "paths": ["/no-such-page-on-app2/"]})
    assert orchestrator.run("rollback").returncode == 1
    failed = orchestrator.run("deploy", "third")
    assert failed.returncode == 1
    assert one_error_line(failed).startswith("deployer: error: app2: ")
    _both_on(deployment, second, deployment.source.sha("second"))
    assert base  # the first rollback failed on app2 too: nobody went back alone


def test_an_orchestrator_killed_at_random_points_leaves_a_truthful_status_and_the_next_deploy_aligns_all(
        orchestrator, deployment, second, wait_until):
    _deploy_base_on_both(orchestrator)
    base, sha = deployment.source.sha("base"), deployment.source.sha("second")
    assert orchestrator.run("release", "second").returncode == 0  # the kills land in the switch
    env = {k: v for k, v in os.environ.items() if k not in ("DEPLOYER_CONFIG", "SSH_AUTH_SOCK")}
    rng = random.Random(int(os.environ.get("KILL_SEED", "11")))
    for delay in sorted(rng.uniform(0.3, 6.0) for _ in range(2)):
        killed = subprocess.Popen([sys.executable, "-m", "deployer", "--config", str(orchestrator.config_file),
                                   "activate", sha], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        time.sleep(delay)
        killed.kill()
        killed.wait()
        assert wait_until(lambda: settled(deployment, second), timeout=90)
        status = json.loads(orchestrator.run("status", "--json").stdout)
        for row, d in zip(status["servers"], (deployment, second)):
            # One right answer per server: it kept the release only if it got `commit` and recorded it.
            last = d.history()[-1]
            kept = last["to"] == sha and last["result"] == "ok"
            assert row["current"] == d.current == (sha if kept else base), (delay, last)
            assert d.healthz()["release"] == d.current  # what current says is what is served
        assert status["agree"] == (deployment.current == second.current)
        again = orchestrator.run("deploy", "base")  # the next command brings all to one release
        assert again.returncode == 0, again.stderr
        _both_on(deployment, second, base)


def test_rollback_of_servers_left_mixed_brings_them_back_to_the_release_they_shared(orchestrator, deployment, second):
    _deploy_base_on_both(orchestrator)
    deployment.ok("deploy", "second")  # as an orchestrator killed after app1's commit leaves them
    base = deployment.source.sha("base")
    result = orchestrator.run("rollback")
    assert result.returncode == 0, result.stderr
    _both_on(deployment, second, base)
    assert "[app2] release " in result.stderr and "is already live; nothing to do" in result.stderr


def test_two_servers_on_one_postgresql_migrate_once_and_roll_back_together(
        pg_deployment, postgres, tmp_path, sshd):
    app1 = pg_deployment
    (tmp_path / "app2").mkdir()
    app2 = type(app1)(tmp_path / "app2", app1.source, app1.python, app1.uv_cache)
    app2.use_database_url(postgres.url(app1.pg_database))
    try:
        orchestrator = Orchestrator(tmp_path, sshd, [app1.config_file, app2.config_file])
        assert orchestrator.run("deploy", "base").returncode == 0
        result = orchestrator.run("deploy", "migration")
        assert result.returncode == 0, result.stderr
        sha = app1.source.sha("migration")
        _both_on(app1, app2, sha)
        assert list((app1.deploy_to / "state" / "backups").glob("*.dump"))  # pg_dump, on app1 only
        assert not (app2.deploy_to / "state" / "backups").exists() or not list(
            (app2.deploy_to / "state" / "backups").iterdir())

        back = orchestrator.run("rollback", "--migrate")
        assert back.returncode == 0, back.stderr
        _both_on(app1, app2, app1.source.sha("base"))
        assert "unapply" in "".join(line for line in back.stderr.splitlines() if line.startswith("[app1]"))
    finally:
        app2.stop()


def test_bad_input_across_servers_is_one_line_exit_2_and_changes_nothing(orchestrator, deployment, second):
    _deploy_base_on_both(orchestrator)
    base = deployment.source.sha("base")
    for argv in (["deploy", "no-such-branch"], ["activate", "0123abcd"], ["activate", "../../etc"],
                 ["rollback", "--to", "not-hex"], ["deploy", "--", "-x"], ["prune", "--keep", "-1"],
                 ["deploy", "base", "--wait", "3"], ["release", "base", "--rebuild"]):
        result = orchestrator.run(*argv)
        assert result.returncode == 2, (argv, result.stderr)
        one_error_line(result)
        _both_on(deployment, second, base)
        assert lock_of(deployment) is None and lock_of(second) is None


LONG_LINE = 200 * 1024


def _chatty_deployer(path) -> str:
    """A server's deployer that first says one 200 KiB line on stdout when the orchestrator runs
    its activation (where the orchestrator reads stdout line by line, for events)."""
    path.write_text("#!/bin/sh\n"
                    f'case "$*" in *--orchestrated*) {sys.executable} -c "print(\'y\' * {LONG_LINE})";; esac\n'
                    f'exec {REMOTE_DEPLOYER} "$@"\n')
    path.chmod(0o755)
    return str(path)


def test_a_200_kib_line_from_a_server_is_shown_cut_and_the_deploy_goes_on(orchestrator, deployment, second,
                                                                            tmp_path):
    """A hook prints one long line on each server: app1 run as `ssh: local` (a local child
    process), app2 over SSH, whose deployer also says a long line on stdout."""
    _deploy_base_on_both(orchestrator)
    for d in (deployment, second):
        d.write_config(hooks={"before_switch": [f"python -c \"print('x' * {LONG_LINE})\""]})
    orchestrator.write([deployment.config_file, second.config_file], app1={"ssh": "local"},
                       app2={"deployer": _chatty_deployer(tmp_path / "chatty-deployer")})
    sha = deployment.source.sha("second")

    result = orchestrator.run("deploy", "second")

    assert "Traceback" not in result.stderr, result.stderr[-4000:]
    assert result.returncode == 0, result.stderr[-4000:]
    _both_on(deployment, second, sha)
    shown = [line for line in result.stderr.splitlines() if "xxxxxxxxxx" in line]
    assert {line.split()[0] for line in shown} == {"[app1]", "[app2]"}, [line[:80] for line in shown]
    assert all(len(line) < 4096 and line.endswith("bytes cut]") for line in shown), [line[-80:] for line in shown]
