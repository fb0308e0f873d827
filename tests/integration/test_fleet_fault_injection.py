"""kill -9 during every barrier phase of a deploy across servers (docs/design.md §13): of the
orchestrator, or of one server's deployer. Whoever dies, wherever, the servers end on one
release each serves, and it is the one the orchestrator's last word says (or, with the
orchestrator itself gone, the one the next `activate` brings every server to).

Two deploy roots ("servers") behind a private sshd, sharing one database; app1 runs the
migrations. Each test walks one victim through two of the four phases (phases_for: every pair of
victim, phase and strategy is covered) on the same servers, so every kill is also followed by
the next command on what it left.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml

from fleet_setup import orchestrated_commands_of, settled

PHASES = ("migrated", "prepared", "switched", "live")


def marker(phase: str, server: str, strategy: str) -> re.Pattern:
    """The orchestrator's progress line after which `server` is in (or just past) `phase`."""
    step = r"\[\d+/\d+\]"
    after = {
        "migrated": (rf"\[app1\] {step} migrate " if server == "app1"  # app1 has migrated; the others start
                     else rf"\[{server}\] {step} verify"),
        "prepared": (rf"\[{server}\] {step} smoke test \w+ socket" if strategy == "standby"
                     else rf"\[{server}\] {step} migrate "),  # restart: prepared once its schema step is done
        "switched": rf"\[{server}\] {step} switch current",  # in its front-door smoke test
        "live": rf"\[{server}\] {step} smoke test \.+ ok",  # waiting for the word to keep it
    }[phase]
    return re.compile(after)


def kill_during(orchestrator, victim: str, phase: str, strategy: str, deployments: dict, sha: str):
    """Deploy `sha` and kill -9 the victim once the phase's line shows: the orchestrator's exit
    status and output, and whether the victim was killed (a server's deployer may have ended
    already: its line shows after it is past that phase, and a fast run commits at once)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DEPLOYER_CONFIG", "DEPLOYER_DEBUG", "SSH_AUTH_SOCK")}
    proc = subprocess.Popen([sys.executable, "-m", "deployer", "--config", str(orchestrator.config_file),
                             "activate", sha], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    watched = victim if victim != "orchestrator" else "app1" if phase == "migrated" else "app2"
    wanted, seen, killed = marker(phase, watched, strategy), [], False
    for line in proc.stderr:
        seen.append(line)
        if not killed and wanted.match(line):
            if victim == "orchestrator":
                proc.kill()
            else:
                pids = [pid for pid in orchestrated_commands_of(deployments[victim]) if _kill(int(pid))]
            killed = victim == "orchestrator" or bool(pids)
            if victim == "orchestrator":
                break
    out, rest = proc.communicate(timeout=300)
    stderr = "".join(seen) + rest
    assert wanted.search(stderr), f"the {phase} line of {watched} never showed:\n{stderr}"
    return proc.returncode, stderr, killed


def _kill(pid: int) -> bool:
    """SIGKILL; False when the process had already ended between being listed and the kill."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def serving(d) -> str | None:
    """The release this server serves, checked against `current`."""
    health = d.healthz()["release"]
    assert health == d.current, (d.root.name, health, d.current)
    return d.current


VICTIMS = ("orchestrator", "app1", "app2")
STRATEGIES = ("standby", "restart")


def phases_for(victim: str, strategy: str) -> list[str]:
    """Every (victim, phase) pair once, the strategies alternating along victims and phases:
    each (victim, strategy) pair meets two phases and each (phase, strategy) pair one or two
    victims. Every pair of the three dimensions is covered by 12 kills instead of 24, which
    keeps this test inside the suite's 30 minutes on 2 cores."""
    offset = VICTIMS.index(victim) + STRATEGIES.index(strategy)
    return [phase for index, phase in enumerate(PHASES) if (offset + index) % 2 == 0]


@pytest.mark.parametrize("strategy", [pytest.param(name, marks=pytest.mark.strategy(name)) for name in STRATEGIES])
@pytest.mark.parametrize("victim", VICTIMS)
def test_a_kill_in_any_barrier_phase_leaves_one_release_everywhere(
        orchestrator, deployment, second, wait_until, strategy, victim):
    deployments = {"app1": deployment, "app2": second}
    for d in deployments.values():
        # Sixteen page loads: a smoke test long enough that a kill sent when its first line shows
        # lands inside it, even on a fast machine whose warm standby switches in milliseconds.
        d.write_config(smoke={"url": f"http://127.0.0.1:{d.port}", "check_static": False, "timeout": 15,
                              "paths": ["/"] * 16})
    config = yaml.safe_load(orchestrator.config_file.read_text())
    # With the orchestrator gone, the migrations server gives the others this long to put
    # themselves back before its schema moves (300 s by default).
    config["timeouts"] = {"put_back": 8}
    orchestrator.config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    assert orchestrator.run("deploy", "base").returncode == 0
    base = deployment.source.sha("base")
    sha = orchestrator.run("release", "migration").stdout.strip()
    assert sha == deployment.source.sha("migration")

    for phase in phases_for(victim, strategy):
        for _ in range(4):  # a server's deployer can be past the phase and gone before the kill: again
            killed = kill_and_check(orchestrator, victim, phase, strategy, deployments, sha, base, wait_until)
            if killed:
                break
        assert killed, f"{victim}'s deployer was gone before every kill in phase {phase}"


def kill_and_check(orchestrator, victim, phase, strategy, deployments, sha, base, wait_until) -> bool:
    """One deploy with a kill in `phase`, the invariant checked after it, every server back on base."""
    status, stderr, killed = kill_during(orchestrator, victim, phase, strategy, deployments, sha)
    assert "Traceback" not in stderr, stderr
    assert wait_until(lambda: settled(*deployments.values()), timeout=120), f"{phase}: never settled:\n{stderr}"
    where = {name: serving(d) for name, d in deployments.items()}
    # A server's deployer killed only after it had told the orchestrator it was live (it was
    # exiting) changes nothing: the deploy went through, and the kill is tried again.
    killed = killed and not (victim != "orchestrator" and status == 0)
    if not killed:
        assert status == 0 and set(where.values()) == {sha}, (phase, status, where, stderr)
    elif victim == "orchestrator":
        # Each server put itself back unless it had the word to keep the release; the next
        # activate brings every server to one release (here: every one to the new release).
        deploy_id = re.search(r"\[all\] deploy id (\S+)", stderr).group(1)
        for name, d in deployments.items():
            kept = [e for e in d.history() if e.get("deploy_id") == deploy_id and e.get("result") == "ok"]
            assert where[name] == (sha if kept else base), (phase, name, where, stderr)
        again = orchestrator.run("activate", sha)
        assert again.returncode == 0, again.stderr
        assert {serving(d) for d in deployments.values()} == {sha}
    else:
        assert status == 1, f"{phase}: exit {status}\n{stderr}"
        last = stderr.strip().splitlines()[-1]
        assert last.startswith("deployer: error: "), stderr
        kept = "every server went live and keeps the release" in last
        assert set(where.values()) == {sha if kept else base}, (phase, where, stderr)
        if phase in ("switched", "live") and not kept:  # it had switched: it could not put itself back
            assert f"{victim}: its deployer died; the orchestrator put it back on {base[:12]}" in last, last
    if {serving(d) for d in deployments.values()} == {sha}:
        back = orchestrator.run("rollback", "--to", base, "--migrate")
        assert back.returncode == 0, back.stderr
    assert {serving(d) for d in deployments.values()} == {base}, phase
    time.sleep(0.1)
    return killed


def test_the_kills_cover_every_pair_of_victim_phase_and_strategy():
    kills = [(victim, strategy, phase) for victim in VICTIMS for strategy in STRATEGIES
             for phase in phases_for(victim, strategy)]
    assert len(kills) == 12
    for a, b in ((0, 1), (0, 2), (1, 2)):
        every = {(x[a], x[b]) for x in itertools.product(VICTIMS, STRATEGIES, PHASES)}
        assert {(kill[a], kill[b]) for kill in kills} == every, (a, b)
