"""Hooks (docs/design.md §15): the operator's own commands at named points of a deploy, run in
the release with its venv first on PATH and the deploy's facts in the environment."""

import json
import re
import sqlite3
import time
from pathlib import Path

import pytest

# These stories are the restart strategy (docs/design.md §6); standby has tests/integration/test_standby.py.
pytestmark = pytest.mark.strategy("restart")

SEEN = ("DEPLOYER_SHA", "DEPLOYER_PREVIOUS", "DEPLOYER_ACTION", "DEPLOYER_ERROR",
        "DJANGO_SETTINGS_MODULE", "DJANGO_ALLOWED_HOSTS", "VIRTUAL_ENV")

RECORDER = f"""
import json, os, sys
seen = {{name: os.environ.get(name) for name in {SEEN!r}}}
seen["DJANGO_SECRET_KEY set"] = bool(os.environ.get("DJANGO_SECRET_KEY"))
with open(sys.argv[1], "a") as log:
    log.write(json.dumps({{"point": sys.argv[2], "cwd": os.getcwd(), "python": sys.executable,
                          "path": os.environ["PATH"].split(os.pathsep), **seen}}) + "\\n")
"""

FAIL = "python -c \"import sys; print('the hook says no'); sys.exit(3)\""


class Recorder:
    """A hook command that appends what it saw (cwd, interpreter, environment) to a JSON-lines log."""

    def __init__(self, root: Path) -> None:
        self.script = root / "record.py"
        self.script.write_text(RECORDER)
        self.log = root / "hooks.jsonl"

    def command(self, point: str) -> str:
        return f"python {self.script} {self.log} {point}"

    def runs(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []

    def points(self) -> list[str]:
        return [run["point"] for run in self.runs()]


@pytest.fixture
def recorder(deployment) -> Recorder:
    return Recorder(deployment.root)


def step_seconds(stderr: str, name: str) -> tuple[str, float]:
    match = re.search(rf"\] {re.escape(name)} \.* (ok|FAILED) (\d+\.\d+)s", stderr)
    assert match, f"no step {name!r} in:\n{stderr}"
    return match.group(1), float(match.group(2))


def applied_treatments(database: Path) -> set[str]:
    with sqlite3.connect(database) as db:
        return {row[0] for row in db.execute("SELECT name FROM django_migrations WHERE app='treatments'")}


def test_deploy_runs_after_build_then_before_switch_then_after_live_in_the_release(deployment, source_repo, recorder):
    deployment.ok("deploy", "base")
    deployment.write_config(hooks={
        "after_build": [recorder.command("after_build")],
        "before_switch": [recorder.command("before_switch")],
        "after_live": [recorder.command("after_live"), "python manage.py update_index --help"],
    })

    result = deployment.ok("deploy", "visible")

    base, visible = source_repo.sha("base"), source_repo.sha("visible")
    assert recorder.points() == ["after_build", "before_switch", "after_live"]
    releases = deployment.deploy_to / "releases"
    for run in recorder.runs():
        assert (run["DEPLOYER_SHA"], run["DEPLOYER_PREVIOUS"], run["DEPLOYER_ACTION"]) == (visible, base, "deploy")
        assert run["DEPLOYER_ERROR"] is None
        assert run["DJANGO_SETTINGS_MODULE"] == "config.settings.production"
        assert run["DJANGO_ALLOWED_HOSTS"] == "127.0.0.1,localhost"  # from the env file
        assert run["DJANGO_SECRET_KEY set"]
        release = Path(run["cwd"]).parent
        assert Path(run["cwd"]) == release / "app"
        assert run["path"][0] == str(release / "venv" / "bin")
        assert Path(run["python"]).parent == release / "venv" / "bin"  # `python` found through PATH
    build, switch, live = recorder.runs()
    assert Path(build["cwd"]).parent.parent == releases and Path(build["cwd"]).parent.name.startswith(".")
    assert Path(switch["cwd"]) == Path(live["cwd"]) == releases / visible / "app"

    # Numbered, timed steps in the operator's order, the command's output indented under its step.
    assert re.search(r"\[8/9\] hook after_build: python \S+record.py \S+ after_build \.* ok \d+\.\d+s", result.stderr)
    order = [result.stderr.index(name) for name in (
        "collectstatic", "hook after_build:", "write RELEASE.json", "] migrate", "hook before_switch:",
        "switch current to", "smoke test", "record history", "hook after_live: python", "update_index --help")]
    assert order == sorted(order)
    assert step_seconds(result.stderr, "hook after_live: python manage.py update_index --help")[0] == "ok"
    assert re.search(r"\[9/9\] hook after_live: python manage.py update_index --help .*\n    \| usage: manage.py update_index",
                     result.stderr)
    assert deployment.history()[-1]["result"] == "ok"
    assert deployment.env_file.read_text().split("DJANGO_SECRET_KEY=")[1].split("\n")[0] not in result.stderr


def test_release_activate_and_rollback_tell_their_hooks_which_action_runs(deployment, source_repo, recorder):
    deployment.ok("deploy", "base")
    deployment.write_config(hooks={
        "after_build": [recorder.command("after_build")],
        "after_live": [recorder.command("after_live")],
        "after_rollback": [recorder.command("after_rollback")],
    })
    base, second = source_repo.sha("base"), source_repo.sha("second")

    deployment.release("second")
    deployment.ok("activate", second[:12])
    result = deployment.ok("rollback")

    assert [(run["point"], run["DEPLOYER_ACTION"], run["DEPLOYER_SHA"], run["DEPLOYER_PREVIOUS"])
            for run in recorder.runs()] == [
        ("after_build", "release", second, base),
        ("after_live", "activate", second, base),
        ("after_rollback", "rollback", base, second),  # after_live does not run on a rollback
    ]
    assert recorder.runs()[-1]["cwd"] == str(deployment.deploy_to / "releases" / base / "app")
    assert "[7/7] hook after_rollback:" in result.stderr
    assert deployment.current == base


def test_a_failing_after_build_command_leaves_no_release_and_exits_1(deployment, source_repo):
    deployment.ok("deploy", "base")
    deployment.write_config(hooks={"after_build": [FAIL]})

    result = deployment.deployer("release", "visible")

    assert result.returncode == 1, result.stderr
    visible = source_repo.sha("visible")
    assert visible not in deployment.releases
    assert deployment.releases == {source_repo.sha("base")}  # no temp release left either
    assert "    | the hook says no" in result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("deployer: error: step 'hook after_build: python -c")
    assert "exited with status 3" in error and "nothing live changed" in error
    assert deployment.current == source_repo.sha("base")


def test_a_failing_before_switch_after_a_migration_leaves_current_and_puts_the_schema_back(deployment, source_repo):
    deployment.ok("deploy", "visible")
    deployment.write_config(hooks={"before_switch": ["python manage.py showmigrations treatments", FAIL]})

    result = deployment.deployer("deploy", "migration")

    assert result.returncode == 1, result.stderr
    visible = source_repo.sha("visible")
    assert deployment.current == visible
    assert deployment.healthz()["release"] == visible
    # The hook ran after migrate (it saw 0002 applied), and the failure unapplied it again.
    assert "    |  [X] 0002_treatment_aftercare" in result.stderr
    assert "0002_treatment_aftercare" not in applied_treatments(deployment.database)
    error = result.stderr.strip().splitlines()[-1]
    assert "step 'hook before_switch: python -c" in error
    assert f"the live release is untouched: {visible[:12]} is still live" in error
    assert "switch current to" not in result.stderr
    assert deployment.history()[-1]["to"] == visible  # the failed attempt never went live


def test_a_hook_that_outlives_its_timeout_is_killed_and_fails_the_run(deployment, source_repo):
    deployment.ok("deploy", "base")
    # A shell whose child keeps the output pipe open: the whole process group must be killed.
    deployment.write_config(hooks={"timeout": 1, "before_switch": ["sh -c 'sleep 30; echo too late'"]})
    second = deployment.release("second")

    started = time.monotonic()
    result = deployment.deployer("activate", second)
    elapsed = time.monotonic() - started

    assert result.returncode == 1, result.stderr
    outcome, seconds = step_seconds(result.stderr, "hook before_switch: sh -c 'sleep 30; echo too late'")
    assert outcome == "FAILED" and seconds < 4
    assert elapsed < 20
    assert "timed out after 1s" in result.stderr.strip().splitlines()[-1]
    assert deployment.current == source_repo.sha("base")


def test_a_failing_after_live_command_warns_exits_0_and_the_release_stays_live(deployment, source_repo, recorder):
    deployment.ok("deploy", "base")
    deployment.write_config(hooks={"after_live": [FAIL, recorder.command("after_live")]})

    result = deployment.deployer("deploy", "visible")

    assert result.returncode == 0, result.stderr
    visible = source_repo.sha("visible")
    assert deployment.current == visible
    assert deployment.healthz()["release"] == visible
    assert deployment.history()[-1]["result"] == "ok"
    assert recorder.points() == ["after_live"]  # the next command still ran
    warning = (f"deployer: warning: hook after_live command '{FAIL}' failed: exited with status 3 — "
               f"{visible[:12]} is live and passed its smoke test")
    assert warning in result.stderr
    assert "    | the hook says no" in result.stderr
    assert "deployer: error" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"{visible[:12]} is live")
    assert result.stdout.strip() == visible


def test_on_failure_gets_the_error_after_a_failed_smoke_test(deployment, source_repo, recorder):
    deployment.ok("deploy", "base")
    deployment.write_config(hooks={"on_failure": [FAIL, recorder.command("on_failure")]})

    result = deployment.deployer("deploy", "no-boot")

    assert result.returncode == 1, result.stderr
    base, no_boot = source_repo.sha("base"), source_repo.sha("no-boot")
    assert deployment.current == base
    [run] = recorder.runs()
    assert (run["DEPLOYER_ACTION"], run["DEPLOYER_SHA"], run["DEPLOYER_PREVIOUS"]) == ("deploy", no_boot, base)
    error = result.stderr.strip().splitlines()[-1]
    assert error == f"deployer: error: {run['DEPLOYER_ERROR']}"
    assert run["DEPLOYER_ERROR"].startswith("step 'restart service' failed")
    assert run["cwd"] == str(deployment.deploy_to / "releases" / base / "app")  # the live release
    # A failing on_failure command is only a warning: the deploy's own failure is what exits.
    assert "deployer: warning: hook on_failure command" in result.stderr


def test_on_failure_runs_after_a_failed_build_in_deploy(deployment, source_repo, recorder):
    deployment.ok("deploy", "base")
    deployment.write_config(hooks={"on_failure": [recorder.command("on_failure")],
                                   "after_live": [recorder.command("after_live")]})

    result = deployment.deployer("deploy", "bad-check")

    assert result.returncode == 1, result.stderr
    [run] = recorder.runs()
    assert run["DEPLOYER_SHA"] == source_repo.sha("bad-check")
    assert run["DEPLOYER_ERROR"].startswith("step 'django checks' failed")
    assert run["path"][0] == str(deployment.deploy_to / "releases" / source_repo.sha("base") / "venv" / "bin")
    assert deployment.current == source_repo.sha("base")


def test_hooks_do_not_run_for_bad_input(deployment, recorder):
    deployment.ok("deploy", "base")
    deployment.write_config(hooks={"on_failure": [recorder.command("on_failure")]})

    result = deployment.deployer("deploy", "no-such-branch")

    assert result.returncode == 2, result.stderr
    assert recorder.runs() == []
