"""--plan: what release, deploy, activate, rollback and prune would do, resolved by the same
decisions as the real run, with nothing changed and no lock taken (docs/design.md §15)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import REPO_ROOT

PLAN_KEYS = {"command", "exit_code", "refused", "lock", "ref", "sha", "current", "build", "migrations",
             "backup", "hooks", "prune", "steps"}


def snapshot(deploy_to: Path) -> dict:
    """Every path under releases/, current, shared/ and state/: type, mode, mtime and bytes (a
    directory's mtime shows a file created and removed again, e.g. SQLite's -wal and -shm)."""
    seen = {}
    for top in ("releases", "current", "shared", "state"):
        root = deploy_to / top
        if not os.path.lexists(root):
            continue
        entries = [root] if root.is_symlink() or not root.is_dir() else [root, *sorted(root.rglob("*"))]
        for path in entries:
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                body = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                body = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                body = None
            seen[str(path.relative_to(deploy_to))] = (st.st_mode, st.st_size, st.st_mtime_ns, body)
    return seen


def applied(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {f"{app}.{name}" for app, name in conn.execute("SELECT app, name FROM django_migrations")}


def plan_json(deployment, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    result = deployment.deployer(*args, "--plan", "--json")
    return result, json.loads(result.stdout)


def test_plan_of_a_release_changes_nothing_and_names_the_venv_it_would_reuse(deployment, source_repo):
    base = deployment.ok("deploy", "base").stdout.strip()
    deployment.write_config(hooks={"after_build": ["python manage.py check"]})
    before = snapshot(deployment.deploy_to)

    result = deployment.deployer("release", "second", "--plan")

    assert result.returncode == 0, result.stderr
    second = source_repo.sha("second")
    assert f"second is {second}" in result.stdout
    assert f"would reuse the venv of {base[:12]}" in result.stdout
    assert "hooks after_build" in result.stdout and "python manage.py check" in result.stdout
    assert snapshot(deployment.deploy_to) == before
    assert second not in deployment.releases

    deployment.write_config()
    deployment.release("second")
    meta = json.loads((deployment.deploy_to / "releases" / second / "RELEASE.json").read_text())
    assert meta["venv"] == "reused"
    again = deployment.deployer("release", "second", "--plan")
    assert "already built and complete" in again.stdout


def test_plan_of_a_deploy_with_a_migration_names_exactly_what_the_real_deploy_applies(deployment, source_repo):
    visible = deployment.ok("deploy", "visible").stdout.strip()
    before = snapshot(deployment.deploy_to)

    text = deployment.deployer("deploy", "migration", "--plan")
    result, plan = plan_json(deployment, "deploy", "migration")

    assert text.returncode == 0 and result.returncode == 0, text.stderr + result.stderr
    print(text.stdout)  # shown with -s: the operator's view of the plan
    assert snapshot(deployment.deploy_to) == before
    migration = source_repo.sha("migration")
    assert plan["sha"] == migration
    assert plan["current"] == {"now": visible, "after": migration}
    assert plan["build"]["needed"] and plan["build"]["venv"] == "reuse"
    assert plan["migrations"]["apply"] == ["treatments.0002_treatment_aftercare"]
    assert plan["migrations"]["unapply"] == [] and plan["migrations"]["exact"]
    assert "treatments.0002_treatment_aftercare" in text.stdout
    assert f"current would point at releases/{migration}" in text.stdout
    backups = deployment.deploy_to / "state" / "backups"
    assert Path(plan["backup"]).parent == backups

    had = applied(deployment.database)
    deployment.ok("deploy", "migration")

    assert sorted(applied(deployment.database) - had) == plan["migrations"]["apply"]
    taken = [p.name for p in backups.iterdir()]
    assert len(taken) == 1
    assert taken[0].endswith(f"before-deploy-{migration[:12]}.sqlite3")
    assert taken[0].split("-")[0] == Path(plan["backup"]).name.split("-")[0]


def test_plan_of_an_activate_names_its_migrations_and_refuses_an_incomplete_release(deployment, source_repo):
    deployment.ok("deploy", "visible")
    migration = deployment.release("migration")
    second = deployment.release("second")
    (deployment.deploy_to / "releases" / second / "staticfiles" / "staticfiles.json").unlink()
    before = snapshot(deployment.deploy_to)

    result, plan = plan_json(deployment, "activate", migration[:10])
    refused = deployment.deployer("activate", second, "--plan")

    assert result.returncode == 0, result.stderr
    assert plan["migrations"]["apply"] == ["treatments.0002_treatment_aftercare"]
    assert plan["current"]["after"] == migration
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1].startswith("deployer: error: release ")
    assert "is not complete" in refused.stderr and "REFUSED" in refused.stdout
    assert snapshot(deployment.deploy_to) == before

    had = applied(deployment.database)
    deployment.ok("activate", migration)
    assert sorted(applied(deployment.database) - had) == plan["migrations"]["apply"]
    assert deployment.deployer("activate", second).returncode == 1  # the real run refuses too


def test_plan_of_a_plain_rollback_points_current_back(deployment, source_repo):
    deployment.ok("deploy", "base")
    deployment.ok("deploy", "second")
    before = snapshot(deployment.deploy_to)

    result, plan = plan_json(deployment, "rollback")

    assert result.returncode == 0, result.stderr
    assert snapshot(deployment.deploy_to) == before
    base = source_repo.sha("base")
    assert plan["current"] == {"now": source_repo.sha("second"), "after": base}
    assert plan["migrations"]["apply"] == [] and plan["migrations"]["unapply"] == []
    assert plan["backup"] is None
    deployment.ok("rollback")
    assert deployment.current == base


def test_plan_of_a_rollback_past_a_migration_refuses_then_names_what_migrate_unapplies(deployment, source_repo):
    deployment.ok("deploy", "visible")
    migration = deployment.ok("deploy", "migration").stdout.strip()
    before = snapshot(deployment.deploy_to)

    refused = deployment.deployer("rollback", "--plan")
    result, plan = plan_json(deployment, "rollback", "--migrate")

    assert refused.returncode == 1
    assert "treatments.0002_treatment_aftercare" in refused.stderr
    assert refused.stderr.strip().splitlines()[-1].startswith("deployer: error:")
    assert result.returncode == 0, result.stderr
    assert plan["migrations"]["unapply"] == ["treatments.0002_treatment_aftercare"]
    assert plan["migrations"]["unapply_with"] == migration
    assert plan["backup"] and plan["current"]["after"] == source_repo.sha("visible")
    assert snapshot(deployment.deploy_to) == before
    assert deployment.deployer("rollback").returncode == 1  # the real run refuses too

    had = applied(deployment.database)
    deployment.ok("rollback", "--migrate")
    assert sorted(had - applied(deployment.database)) == plan["migrations"]["unapply"]


def test_plan_of_a_prune_names_what_the_real_prune_deletes(deployment, source_repo):
    for ref in ("base", "second", "third"):
        deployment.ok("deploy", ref)
    deployment.release("visible")
    deployment.stop()  # /healthz would make the live site itself open the database
    before = snapshot(deployment.deploy_to)

    result, plan = plan_json(deployment, "prune", "--keep", "1")

    assert result.returncode == 0, result.stderr
    assert snapshot(deployment.deploy_to) == before
    # kept: current (third), the rollback target (second), and the newest build (visible)
    assert plan["prune"]["delete"] == [source_repo.sha("base")]
    assert plan["prune"]["frees_bytes"] > 0
    had = deployment.releases
    deployment.ok("prune", "--keep", "1")
    assert sorted(had - deployment.releases) == plan["prune"]["delete"]


def test_plan_exit_codes_follow_the_real_run(deployment, source_repo):
    deployment.ok("deploy", "base")
    before = snapshot(deployment.deploy_to)

    assert deployment.deployer("deploy", "no-such-branch", "--plan").returncode == 2
    assert deployment.deployer("release", "-bad", "--plan").returncode == 2
    assert deployment.deployer("activate", "zzzz", "--plan").returncode == 2
    assert deployment.deployer("rollback", "--migrate", "--force", "--plan").returncode == 2
    assert deployment.deployer("prune", "--keep", "0", "--plan").returncode == 2
    assert deployment.deployer("deploy", "second", "--json").returncode == 2  # --json needs --plan
    nothing = deployment.deployer("rollback", "--plan")
    assert nothing.returncode == 1 and "no release to roll back to" in nothing.stderr
    assert deployment.deployer("deploy", "base", "--plan").returncode == 0
    assert snapshot(deployment.deploy_to) == before


def test_plan_json_is_one_object_with_the_documented_keys(deployment, source_repo):
    deployment.ok("deploy", "base")
    for args in (("release", "second"), ("deploy", "second"), ("rollback",), ("prune",),
                 ("activate", source_repo.sha("base")[:8])):
        result = deployment.deployer(*args, "--plan", "--json")
        plan = json.loads(result.stdout)
        assert set(plan) == PLAN_KEYS, args
        assert plan["command"] == args[0] and plan["exit_code"] == result.returncode
        assert all(set(step) == {"step", "detail"} for step in plan["steps"])
    assert '"exit_code"' in (REPO_ROOT / "docs" / "reference.md").read_text()  # documented there


def test_plan_works_while_another_deploy_holds_the_lock(deployment, source_repo):
    deployment.ok("deploy", "base")
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\n"
         "from pathlib import Path\n"
         "from deployer.lock import deploy_lock\n"
         "from deployer.paths import Paths\n"
         "with deploy_lock(Paths(Path(sys.argv[1])), 'deployer deploy elsewhere'):\n"
         "    print('held', flush=True)\n"
         "    time.sleep(120)\n",
         str(deployment.deploy_to)],
        stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(deployment.deploy_to)

        result, plan = plan_json(deployment, "deploy", "second")
        text = deployment.deployer("rollback", "--plan")

        assert result.returncode == 0, result.stderr
        assert plan["lock"]["command"] == "deployer deploy elsewhere"
        assert plan["sha"] == source_repo.sha("second")
        assert text.returncode == 1 and "no release to roll back to" in text.stderr  # not 3
        assert snapshot(deployment.deploy_to) == before
        assert deployment.deployer("deploy", "second").returncode == 3  # the lock really is held
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("writer_open", [False, True])
def test_reading_the_migrations_leaves_a_wal_database_byte_for_byte(tmp_path, writer_open):
    from deployer import migrations

    db = tmp_path / "db.sqlite3"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE django_migrations (app, name)")
    conn.execute("INSERT INTO django_migrations VALUES ('treatments', '0001_initial')")
    conn.commit()
    conn.close()
    writer = sqlite3.connect(db) if writer_open else None
    if writer:  # committed rows that live only in the -wal while the site holds a connection
        writer.execute("INSERT INTO django_migrations VALUES ('treatments', '0002_treatment_aftercare')")
        writer.commit()

    def files():
        return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(tmp_path.iterdir())} | {
            ".": tmp_path.stat().st_mtime_ns}

    before = files()
    found = migrations.applied(db)
    assert files() == before
    expected = {("treatments", "0001_initial")} | ({("treatments", "0002_treatment_aftercare")} if writer else set())
    assert found == expected
    if writer:
        writer.close()


STEP_LINE = re.compile(r"\[\d+/\d+\] (?P<name>.+?) \.{3,} ok ")


def run_steps(result) -> list[str]:
    return [m.group("name") for m in map(STEP_LINE.match, result.stderr.splitlines()) if m]


@pytest.mark.parametrize("strategy", [pytest.param(name, marks=pytest.mark.strategy(name))
                                      for name in ("standby", "restart")])
@pytest.mark.parametrize("command", ["activate", "rollback"])
def test_every_step_the_run_prints_is_in_its_plan_in_the_same_order(deployment, source_repo, strategy, command):
    """--plan decides with the run's own functions: the colour it names, the switch step's
    name and the hooks are the ones the run then prints (issue 17)."""
    deployment.ok("deploy", "base")
    second = deployment.release("second")
    args = ("activate", second) if command == "activate" else ("rollback",)
    if command == "rollback":
        deployment.ok("activate", second)

    _, plan = plan_json(deployment, *args)
    result = deployment.ok(*args)

    planned = [step["step"] for step in plan["steps"]]
    ran = run_steps(result)
    assert ran, result.stderr
    verify = "verify release" if command == "activate" else f"verify {source_repo.sha('base')[:12]}"
    positions = [planned.index(name) if name in planned else -1 for name in ran if name != verify]
    assert -1 not in positions and positions == sorted(positions), (planned, ran)
