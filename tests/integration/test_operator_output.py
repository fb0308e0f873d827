"""What the operator reads: the whole command's time and its parts, which config and deploy root
a command used, and a first migrate said in a line, not hundreds of names."""

from __future__ import annotations

import json
import re
import sqlite3


def applied_count(database) -> tuple[int, set[str]]:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT app FROM django_migrations").fetchall()
    return len(rows), {app for (app,) in rows}


def test_a_deploy_reports_and_records_the_whole_command_with_its_build_and_activate_parts(deployment):
    result = deployment.ok("deploy", "base")

    said = re.search(r"is live \(deploy took (\d+\.\d)s: build (\d+\.\d)s, activate (\d+\.\d)s\)", result.stderr)
    assert said, result.stderr
    whole, build, activate = (float(part) for part in said.groups())
    assert abs(whole - (build + activate)) <= 0.11
    built = float(re.search(r"built \w+ in (\d+\.\d)s", result.stderr).group(1))
    assert build >= built  # the build's own steps are a part of it
    entry = deployment.history()[-1]
    assert abs(entry["seconds"] - whole) <= 0.06, (entry["seconds"], whole)
    assert entry["steps"]["build"] >= built
    assert {"build", "verify release", "migrate", "smoke test"} <= set(entry["steps"])


def test_an_activate_alone_reports_its_own_time(deployment, source_repo):
    deployment.ok("deploy", "base")
    second = deployment.release("second")
    result = deployment.ok("activate", second)
    assert re.search(r"is live \(activate took \d+\.\ds\)", result.stderr), result.stderr
    assert "build" not in deployment.history()[-1]["steps"]


def test_status_and_list_name_the_config_and_the_deploy_root_they_read(deployment):
    deployment.ok("deploy", "base")

    status = deployment.ok("status").stdout.splitlines()
    assert status[0] == f"config:   {deployment.config_file} (deploy_to {deployment.deploy_to})"
    listed = deployment.ok("list").stdout.splitlines()
    assert listed[0] == f"releases in {deployment.deploy_to / 'releases'} (config {deployment.config_file})"
    for command in ("status", "list"):
        answer = json.loads(deployment.ok(command, "--json").stdout)
        assert (answer["config"], answer["deploy_to"]) == (str(deployment.config_file), str(deployment.deploy_to))


def test_the_first_migrate_says_how_many_migrations_of_which_apps(deployment):
    deployment.database.unlink()  # the fixture's database is migrated already: start empty
    result = deployment.ok("deploy", "base")

    count, apps = applied_count(deployment.database)
    assert count > 20
    line = next(line for line in result.stderr.splitlines() if line.strip().startswith("applying "))
    assert line.strip() == (f"applying {count} migrations of {len(apps)} app(s): {', '.join(sorted(apps))} "
                            f"with {deployment.current[:12]}'s code")


def test_a_few_migrations_are_still_named_one_by_one(deployment, source_repo):
    deployment.ok("deploy", "base")
    result = deployment.ok("deploy", "migration")
    assert "applying treatments.0002_treatment_aftercare with" in result.stderr, result.stderr
