"""Standby activation (docs/design.md §16): the idle colour starts from the new release and is
smoke-tested on its own socket before the public sees it; going live is two renames; the old
colour stays up as a warm standby, so a rollback inside its window is a relink only.

The front door is scripts/local-service `front` (the stand-in for nginx): it connects to
deploy/live.sock for every connection and logs the socket it reached, so the tests can count
the public requests each colour answered.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest


def live_colour(d) -> str:
    return Path(os.readlink(d.deploy_to / "live.sock")).stem


def slot(d, colour: str) -> str | None:
    link = d.deploy_to / "slots" / colour
    return Path(os.readlink(link)).name if link.is_symlink() else None


def running(d, colour: str) -> bool:
    return subprocess.run(d.colour_command("status").replace("{colour}", colour).split()).returncode == 0


def front_log(d) -> list[str]:
    path = d.deploy_to / "run" / "front.log"
    return path.read_text().splitlines() if path.exists() else []


class PublicLoad:
    """Requests through the front door, one connection each (as nginx makes upstream), until stopped."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.results: list[tuple[int | str, str | None, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for path in ("/", "/healthz"):
                started = time.monotonic()
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=30) as resp:
                        body = resp.read()
                        release = json.loads(body)["release"] if path == "/healthz" else None
                        self.results.append((resp.status, release, time.monotonic() - started))
                except urllib.error.HTTPError as exc:
                    self.results.append((exc.code, None, time.monotonic() - started))
                except OSError as exc:
                    self.results.append((f"{type(exc).__name__}: {exc}", None, time.monotonic() - started))

    def __enter__(self) -> PublicLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    @property
    def failures(self) -> list:
        return [r for r in self.results if r[0] != 200]

    @property
    def releases(self) -> set[str]:
        return {r[1] for r in self.results if r[1]}


def test_deploy_starts_the_idle_colour_and_keeps_the_old_one_as_a_warm_standby(deployment, source_repo):
    deployment.ok("deploy", "base")
    assert live_colour(deployment) == "blue"
    assert slot(deployment, "blue") == source_repo.sha("base")

    result = deployment.ok("deploy", "second")

    second = source_repo.sha("second")
    assert deployment.current == second
    assert live_colour(deployment) == "green" and slot(deployment, "green") == second
    assert deployment.healthz()["release"] == second
    assert running(deployment, "blue") and running(deployment, "green")  # blue: the warm standby
    for number, name in enumerate(["verify release", "migrate", f"start green from {second[:12]}",
                                   "smoke test green socket", "switch current and socket to green",
                                   "smoke test", "record history"], 1):
        assert f"[{number}/7] {name}" in result.stderr
    assert "blue keeps running" in result.stderr
    standby = json.loads((deployment.deploy_to / "state" / "standby.json").read_text())
    assert (standby["colour"], standby["sha"]) == ("blue", source_repo.sha("base"))
    entry = deployment.history()[-1]
    assert (entry["from"], entry["to"], entry["result"]) == (source_repo.sha("base"), second, "ok")
    assert {"smoke test green socket", "smoke test"} <= set(entry["steps"])


def test_activate_under_load_fails_no_public_request(deployment, source_repo):
    deployment.ok("deploy", "base")
    second = deployment.release("second")

    with PublicLoad(deployment.port) as load:
        time.sleep(0.5)
        deployment.ok("activate", second)
        time.sleep(0.5)

    assert load.failures == []
    assert load.releases == {source_repo.sha("base"), second}
    assert load.results[-1][1] in (None, second)


def test_rollback_to_the_warm_standby_is_a_relink_only(deployment, source_repo):
    deployment.ok("deploy", "base")
    deployment.ok("deploy", "second")
    blue_pid = (deployment.deploy_to / "run" / "gunicorn-blue.pid").read_text()

    started = time.monotonic()
    result = deployment.ok("rollback")
    took = time.monotonic() - started

    base = source_repo.sha("base")
    assert deployment.current == base and live_colour(deployment) == "blue"
    assert deployment.healthz()["release"] == base
    assert f"blue already runs {base[:12]}" in result.stderr
    assert "start blue" not in result.stderr
    assert (deployment.deploy_to / "run" / "gunicorn-blue.pid").read_text() == blue_pid  # never restarted
    assert running(deployment, "green")  # now green is the standby, for a roll forward
    assert took < 10, f"a relink-only rollback took {took:.1f}s"


def test_rollback_after_the_window_stops_the_expired_standby_and_starts_the_release_again(
        tmp_path, source_repo, release_python, uv_cache, migrated_db):
    from conftest import Deployment
    import shutil

    d = Deployment(tmp_path, source_repo, release_python, uv_cache, standby_seconds=1)
    d.write_config()
    d.database.parent.mkdir(parents=True)
    shutil.copy(migrated_db, d.database)
    try:
        d.ok("deploy", "base")
        d.ok("deploy", "second")
        time.sleep(1.5)

        result = d.ok("rollback")

        base = source_repo.sha("base")
        assert "stopped blue" in result.stderr and "standby window had passed" in result.stderr
        assert f"start blue from {base[:12]}" in result.stderr
        assert d.current == base and live_colour(d) == "blue" and d.healthz()["release"] == base
    finally:
        d.stop()


def test_standby_seconds_zero_stops_the_old_colour_at_once(deployment, source_repo):
    deployment.standby_seconds = 0
    deployment.write_config()
    deployment.ok("deploy", "base")

    result = deployment.ok("deploy", "second")

    assert "stopped blue (service.standby_seconds is 0)" in result.stderr
    assert not running(deployment, "blue") and running(deployment, "green")
    assert deployment.healthz()["release"] == source_repo.sha("second")


def test_a_release_that_fails_its_smoke_test_on_the_standby_socket_gets_no_public_request(deployment, source_repo):
    deployment.ok("deploy", "base")
    base = source_repo.sha("base")
    broken = deployment.release("home-500")
    deployment.write_config(smoke={"url": f"http://127.0.0.1:{deployment.port}", "check_static": False, "timeout": 2})
    logged_before = len(front_log(deployment))

    with PublicLoad(deployment.port) as load:
        time.sleep(0.3)
        result = deployment.deployer("activate", broken)
        time.sleep(0.3)

    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("deployer: error: step 'smoke test green socket' failed")
    assert "GET / (smoke.paths) answered 500" in last and "the public never saw it" in last
    assert f"{base[:12]} is still live" in last
    assert load.failures == [] and load.releases == {base}
    assert len(load.results) > 5
    reached = {line.split()[1] for line in front_log(deployment)[logged_before:]}
    assert reached == {str(deployment.deploy_to / "run" / "blue.sock")}  # not one public request to green
    assert deployment.current == base and live_colour(deployment) == "blue"
    assert not running(deployment, "green")
    assert deployment.history()[-1]["result"] == "failed-smoke"


def test_a_front_door_smoke_failure_after_the_relink_puts_both_links_back(deployment, source_repo):
    deployment.ok("deploy", "base")
    base = source_repo.sha("base")
    flaky = deployment.release("home-500-later")  # passes on its socket, then / answers 500
    deployment.write_config(smoke={"url": f"http://127.0.0.1:{deployment.port}", "check_static": False, "timeout": 2})

    result = deployment.deployer("activate", flaky)

    assert result.returncode == 1, result.stderr
    assert "[4/7] smoke test green socket" in result.stderr and "[6/7] smoke test" in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("deployer: error: step 'smoke test' failed")
    assert f"{base[:12]} is live again (blue)" in last and "marked failed-smoke" in last
    assert deployment.current == base and live_colour(deployment) == "blue"
    assert deployment.healthz()["release"] == base
    assert running(deployment, "blue") and not running(deployment, "green")


@pytest.mark.parametrize("ref", ["no-boot"])
def test_a_standby_that_cannot_boot_changes_nothing_live(deployment, source_repo, ref):
    deployment.ok("deploy", "base")
    base = source_repo.sha("base")
    sha = deployment.release(ref)

    result = deployment.deployer("activate", sha)

    assert result.returncode == 1
    assert "step 'start green from" in result.stderr.strip().splitlines()[-1]
    assert deployment.current == base and live_colour(deployment) == "blue"
    assert deployment.healthz()["release"] == base
    assert deployment.history()[-1]["result"] == "failed-smoke"


def test_status_shows_both_colours_and_list_marks_the_standby(deployment, source_repo):
    deployment.ok("deploy", "base")
    deployment.ok("deploy", "second")
    base, second = source_repo.sha("base"), source_repo.sha("second")

    status = json.loads(deployment.ok("status", "--json").stdout)
    text = deployment.ok("status").stdout
    listed = {row["sha"]: row for row in json.loads(deployment.ok("list", "--json").stdout)["releases"]}

    assert status["strategy"] == "standby" and status["service"] == "active"
    assert status["colours"]["green"] == {"release": second, "running": True, "live": True, "standby_until": None}
    blue = status["colours"]["blue"]
    assert (blue["release"], blue["running"], blue["live"]) == (base, True, False) and blue["standby_until"]
    assert "green:" in text and "LIVE" in text and "standby until" in text
    assert listed[second]["state"] == "current" and not listed[second]["standby"]
    assert listed[base]["state"] == "previous" and listed[base]["standby"] is True
    assert "previous +standby" in deployment.ok("list").stdout


def test_kill_9_inside_the_standby_steps_never_leaves_the_public_on_an_unchecked_release(deployment, source_repo):
    """kill -9 at points inside the new steps. After each kill: the socket link points at a colour,
    and after a restart of the units at worst (every gunicorn of the root stopped, the live colour
    started again, as socket activation would) it serves the release its slot names. That is the
    release `current` names, except after a kill between the two renames, which `status` reports
    as an unfinished activation. Rerunning the command always finishes the job."""
    from test_fault_injection import Run

    deployment.ok("deploy", "base")
    shas = [source_repo.sha("base"), deployment.release("second")]
    violations = []
    points = [(trigger, delay, group) for trigger in ("[3/7]", "[4/7]", "[5/7]", "[6/7]", "[7/7]")
              for delay, group in ((0.0, False), (0.02, True))]
    for number, (trigger, delay, whole_group) in enumerate(points):
        target = shas[(number + 1) % 2]
        run = Run(deployment, ("activate", target))
        killed = run.kill_at(trigger, delay, whole_group)
        where = f"activate {target[:7]} killed at {trigger}+{delay}s (group={whole_group}, killed={killed})"
        current = deployment.current
        colour = live_colour(deployment)
        for c in ("blue", "green"):  # the reboot
            subprocess.run(deployment.colour_command("stop").replace("{colour}", c).split(), capture_output=True)
        subprocess.run(deployment.colour_command("start").replace("{colour}", colour).split(), check=True,
                       capture_output=True)
        served = deployment.healthz()["release"]
        finished = json.loads(deployment.ok("status", "--json").stdout)["activation_finished"]
        if served != slot(deployment, colour):
            violations.append(f"{where}: the live colour {colour} serves {served[:7]}, its slot names another")
        if served != current and finished:
            violations.append(f"{where}: serves {served[:7]} but current is {current[:7]} and status says finished")
        again = deployment.deployer("activate", target)
        if again.returncode != 0:
            violations.append(f"{where}: rerun exited {again.returncode}: {again.stderr.strip().splitlines()[-1]}")
            continue
        leftovers = [p.name for p in deployment.deploy_to.glob(".*") if p.is_symlink()]
        leftovers += [p.name for p in (deployment.deploy_to / "slots").glob(".*")]
        if deployment.current != target or deployment.healthz()["release"] != target or leftovers:
            violations.append(f"{where}: after the rerun current={deployment.current[:7]}, leftovers={leftovers}")
    assert violations == []
