"""The fleet's put-back holds (docs/design.md §13): whatever fails, and whoever goes away, every
server ends on one release, serving it, its history saying so; and no wait lasts for ever.

Two deploy roots ("servers") behind a private sshd, sharing one database, driven by the real
orchestrator CLI.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from fleet_setup import lock_of, one_error_line, settled


def _deploy_base_on_both(orchestrator) -> None:
    result = orchestrator.run("deploy", "base")
    assert result.returncode == 0, result.stderr


def _on(d, sha: str) -> None:
    assert d.current == sha
    assert d.healthz()["release"] == sha


def _failing_smoke(d) -> dict:
    """A smoke test that fails wherever it looks: on the standby's socket, before the switch."""
    return {"url": f"http://127.0.0.1:{d.port}", "check_static": False, "timeout": 3, "paths": ["/no-such-page/"]}


def _failing_front_door(timeout: float = 3) -> dict:
    """A smoke test that passes on the standby's socket and fails through the front door, after
    the switch: the smoke URL names a port nothing listens on."""
    return {"url": "http://127.0.0.1:9", "check_static": False, "timeout": timeout}


def _set_timeouts(orchestrator, **timeouts) -> None:
    config = yaml.safe_load(orchestrator.config_file.read_text())
    config["timeouts"] = timeouts
    orchestrator.config_file.write_text(yaml.safe_dump(config, sort_keys=False))


def _time_of(entry: dict) -> float:
    return datetime.fromisoformat(entry["time"]).timestamp()


def test_the_migrations_server_puts_the_schema_back_only_once_the_others_are_back(orchestrator, deployment, second):
    _deploy_base_on_both(orchestrator)
    base, sha = deployment.source.sha("base"), deployment.source.sha("migration")
    deployment.write_config(smoke=_failing_front_door())  # app1, the migrations server, fails once live

    result = orchestrator.run("deploy", "migration")

    assert result.returncode == 1, result.stderr
    assert one_error_line(result).startswith("deployer: error: app1: ")
    for d in (deployment, second):
        _on(d, base)
        assert d.history()[-1]["to"] == sha and d.history()[-1]["result"] != "ok"
    # app2 ran the new code against the new schema: it was back on base before app1's schema moved.
    restore_backup = next((deployment.deploy_to / "state" / "backups").glob(f"*before-restore-{base[:12]}*"))
    app2_back = _time_of(second.history()[-1])
    assert int(app2_back) <= restore_backup.stat().st_mtime
    order = [line for line in result.stderr.splitlines()
             if re.match(r"\[app2\] +switched back to|\[app1\] .*(unapplying|unapplied|before-restore)", line)]
    assert order and order[0].startswith("[app2]"), result.stderr


def test_a_migrations_server_failing_before_the_switch_waits_for_the_others_standbys_to_stop(
        orchestrator, deployment, second):
    _deploy_base_on_both(orchestrator)
    base = deployment.source.sha("base")
    deployment.write_config(smoke=_failing_smoke(deployment))  # app1's standby fails on its socket

    result = orchestrator.run("deploy", "migration")

    assert result.returncode == 1, result.stderr
    for d in (deployment, second):
        _on(d, base)
    lines = result.stderr.splitlines()
    app2_done = next(i for i, line in enumerate(lines) if line.startswith("[app2] deployer: error: app1 failed"))
    schema_moves = next(i for i, line in enumerate(lines) if re.match(r"\[app1\] .*before-restore", line))
    assert app2_done < schema_moves, result.stderr  # app2's standby (new code) was stopped first


def test_a_failure_after_commit_is_a_warning_and_never_switches_a_server_back(orchestrator, deployment, second):
    _deploy_base_on_both(orchestrator)
    sha = deployment.source.sha("second")
    service = second.service_config()
    second.write_config(service={**service, "standby_seconds": 0, "stop": "false {colour}"})  # app2 cannot stop blue

    result = orchestrator.run("deploy", "second")

    assert result.returncode == 0, result.stderr
    for d in (deployment, second):
        _on(d, sha)
        assert d.history()[-1]["to"] == sha and d.history()[-1]["result"] == "ok"
    assert "[app2] deployer: warning: the old colour blue was not stopped" in result.stderr
    assert second.history()[-1]["warning"].startswith("the old colour blue was not stopped")
    assert "warning" not in deployment.history()[-1]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"[all] {sha[:12]} is live on 2 server(s); 1 warning(s): app2: the old colour blue"), last


def test_a_server_that_hangs_is_a_failure_at_its_deadline_and_every_server_goes_back(
        orchestrator, deployment, second, wait_until):
    _deploy_base_on_both(orchestrator)
    base, sha = deployment.source.sha("base"), deployment.source.sha("second")
    second.write_config(hooks={"before_switch": ["sleep 600"], "timeout": 900})  # alive, and silent
    _set_timeouts(orchestrator, prepare=5)

    started = time.monotonic()
    result = orchestrator.run("deploy", "second")
    took = time.monotonic() - started

    assert result.returncode == 1, result.stderr
    line = one_error_line(result)
    assert line.startswith("deployer: error: app2: no answer within 5s in step 'hook before_switch: sleep 600'"), line
    assert took < 120, f"the orchestrator waited {took:.0f}s for a server whose deadline was 5s"
    assert wait_until(lambda: settled(deployment, second), timeout=60)
    _on(deployment, base)
    _on(second, base)
    assert deployment.history()[-1]["to"] == sha  # app1 was called off, its attempt recorded
    assert second.history()[-1]["to"] == base  # app2 was stopped before it changed anything



VANISHING_ORCHESTRATOR = """
import asyncio, json, os, sys
from pathlib import Path
from deployer.argv import activate_argv, orchestrated
from deployer.fleet import load_fleet
from deployer.gate import EVENT
from deployer.remote import locked

config, sha, vanish_after = sys.argv[1:]

async def until(proc, wanted):
    while True:
        line = await proc.readline("stdout")
        if not line:
            sys.exit(f"a server ended before {wanted!r}")
        if line.startswith(EVENT) and json.loads(line[len(EVENT):])["event"] == wanted:
            return

async def main():
    fleet = load_fleet(Path(config))
    async with locked(fleet) as (connections, token):
        procs = []
        for number, connection in enumerate(connections):  # the migrations server (app1) first
            argv = orchestrated(activate_argv(connection.server, sha), "20261204T120000Z-0a1b2c",
                                number == 0, barrier_timeout=600, put_back_timeout=30)
            procs.append(await connection.start(argv, token))
            asyncio.ensure_future(procs[-1].pump_stderr(lambda line: None))
            if number == 0:
                await until(procs[0], "migrated")
        for proc in procs:
            await until(proc, "prepared")
        for proc in procs:
            proc.write(json.dumps({"do": "go"}) + "\\n")
        await asyncio.sleep(0.2)  # the word is on its way
        if vanish_after == "live":
            for proc in procs:
                await until(proc, "live")
        print("vanishing", flush=True)
        os._exit(0)  # no word, no goodbye: every pipe and connection closes with the process

asyncio.run(main())
"""


@pytest.mark.parametrize("strategy", [pytest.param(name, marks=pytest.mark.strategy(name))
                                      for name in ("standby", "restart")])
@pytest.mark.parametrize("vanish_after", ["go", "live"])
def test_an_orchestrator_that_vanishes_after_go_or_live_leaves_every_server_back_on_the_previous_release(
        orchestrator, deployment, second, wait_until, strategy, vanish_after):
    _deploy_base_on_both(orchestrator)
    base = deployment.source.sha("base")
    sha = orchestrator.run("release", "second").stdout.strip()

    gone = subprocess.run([sys.executable, "-c", VANISHING_ORCHESTRATOR, str(orchestrator.config_file), sha,
                           vanish_after], capture_output=True, text=True, timeout=300)

    assert gone.stdout.strip() == "vanishing", gone.stderr
    assert wait_until(lambda: settled(deployment, second), timeout=90)
    for d in (deployment, second):
        _on(d, base)
        entry = d.history()[-1]
        assert (entry["to"], entry["result"]) == (sha, "failed"), (d.root.name, entry)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_operator_interrupting_the_orchestrator_during_a_failing_smoke_test_gets_every_server_back(
        orchestrator, deployment, second, signum):
    _deploy_base_on_both(orchestrator)
    base, sha = deployment.source.sha("base"), deployment.source.sha("second")
    second.write_config(smoke=_failing_front_door(timeout=8))  # app2 fails once live, slowly
    env = {k: v for k, v in os.environ.items() if k not in ("DEPLOYER_CONFIG", "SSH_AUTH_SOCK")}
    proc = subprocess.Popen([sys.executable, "-m", "deployer", "--config", str(orchestrator.config_file),
                             "deploy", "second"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if re.match(r"\[app2\] \[\d+/\d+\] switch current", line):
            proc.send_signal(signum)  # app2 is now in its failing front-door smoke test
            break
    _, rest = proc.communicate(timeout=120)
    stderr = "".join(seen) + rest
    assert proc.returncode == 1, stderr
    assert stderr.strip().splitlines()[-1].startswith("deployer: error: interrupted — "), stderr
    for d in (deployment, second):
        _on(d, base)
    assert (deployment.history()[-1]["to"], deployment.history()[-1]["result"]) == (sha, "failed")
    assert (second.history()[-1]["to"], second.history()[-1]["result"]) == (sha, "failed-smoke")
    assert lock_of(deployment) is None and lock_of(second) is None
