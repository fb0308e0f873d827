"""More than one server, end to end (docs/design.md §13, §17; issue 11).

Three booted Debian containers on a private network this test makes: app1 and app2 (each set up
by docs/server-guide.md like the single-server tier, plus sshd with its own host key and the
deploy key authorized) and db1 (PostgreSQL; both app servers' DATABASE_URL points at it). The
host's nginx is the load balancer in front of app1 and app2. The orchestrator runs on the host:
this checkout's `deployer` with a servers.yml, strict known_hosts written from the containers'
own host keys. The tests run in order, like the life of a small fleet.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

import e2e_machine as m
import fleet_machines as f
from guide_setup import adapt_config, run_guide_setup
from e2e_machine import DEV_CHECKOUT, SHARE, WHEELHOUSE, figure

STORY = True  # conftest: a failure here skips the rest of the story
STORY_BROKEN = None

APP_SERVERS = ("app1", "app2")
DEPLOYER_ON_SERVER = "/home/deploy/.local/bin/deployer"


@pytest.fixture(autouse=True)
def _story_so_far():
    if STORY_BROKEN:
        pytest.skip(f"an earlier step of the story failed ({STORY_BROKEN})")


@dataclass
class Fleet:
    machines: dict  # name -> m.Container
    addresses: dict  # name -> private address
    share: Path
    lb: f.LoadBalancer
    config_file: Path
    work: Path
    shas: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)  # what one scenario tells the next
    commits: int = 0

    def orchestrator(self, *args: str, timeout: float = 900) -> m.Result:
        """The orchestrator on the host: this checkout's deployer, the fleet's servers.yml."""
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "deployer", "--config", str(self.config_file), *args],
                              capture_output=True, text=True, timeout=timeout, env=_host_env())
        result = m.Result(proc.args, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)
        m.log(f"orchestrator {' '.join(args)}: exit {result.returncode} in {result.seconds:.1f}s")
        if result.returncode not in (0,):
            self.diagnose()
        return result

    def diagnose(self) -> None:
        """What an operator would look at on each app server after a failure (in the test's log)."""
        for name in APP_SERVERS:
            m.log(f"--- {name}: journal of the colours, links, last history lines\n" + self.on(name, (
                "journalctl -u 'skinmenu@*' --no-pager -n 25; ls -l /home/deploy/live.sock /home/deploy/current "
                "/home/deploy/slots; systemctl --no-pager list-units 'skinmenu*'; "
                "tail -n 3 /home/deploy/state/history.jsonl; echo ---; journalctl --no-pager -n 40 _PID=1; "
                "ls -l /usr/lib/systemd/systemd-executor; df -h / /tmp /run | cat"), check=False).output)

    def start_orchestrator(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "deployer", "--config", str(self.config_file), *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_host_env())

    def on(self, name: str, script: str, check: bool = True) -> m.Result:
        return self.machines[name].run(script, check=check)

    def current(self, name: str) -> str:
        return self.on(name, "readlink /home/deploy/current").stdout.strip().rsplit("/", 1)[-1]

    def server_status(self, name: str) -> dict:
        """The server's own `status --json`, asked inside it (works while its network is down)."""
        return json.loads(self.on(name, f"sudo -iu deploy {DEPLOYER_ON_SERVER} status --json").stdout)

    def healthz(self, name: str) -> dict:
        script = (f"curl -sS --max-time 20 --resolve {m.DOMAIN}:443:127.0.0.1 --cacert {m.CA_IN_CONTAINER} "
                  f"https://{m.DOMAIN}/healthz")
        return json.loads(self.on(name, script).stdout)

    def commit(self, message: str) -> str:
        """A new commit on main, pushed to every app server's repository (as `git push` would)."""
        self.commits += 1
        repo = self.work / "source"
        if not repo.exists():
            subprocess.run(["git", "clone", "-q", "-b", "main", str(self.share / "source.bundle"), str(repo)], check=True)
        css = repo / "app" / "static" / "css" / "site.css"
        css.write_text(css.read_text() + f"\n/* fleet commit {self.commits}: {message} */\n")
        git = ["git", "-C", str(repo), "-c", "user.name=Developer", "-c", "user.email=dev@skinmenu.invalid"]
        subprocess.run([*git, "commit", "-qam", message], check=True)
        bundle = self.share / f"fleet-{self.commits}.bundle"
        subprocess.run([*git, "bundle", "create", "-q", str(bundle), "main"], check=True)
        bundle.chmod(0o644)
        for name in APP_SERVERS:
            self.on(name, f"sudo -u deploy git -C /home/deploy/apps/skinmenu.git fetch -q "
                          f"{SHARE}/{bundle.name} +main:main")
        return subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()

    def all_on(self, sha: str) -> None:
        for name in APP_SERVERS:
            assert self.current(name) == sha, f"{name} is on {self.current(name)[:12]}, not {sha[:12]}"
            assert self.healthz(name)["release"] == sha

    def link(self, name: str, state: str) -> None:
        """The server's network cable: `down` makes it unreachable (silently: no reset, no FIN)."""
        self.on(name, f"ip link set host0 {state}")
        if state == "up":
            f.wait_for_port(self.addresses[name], 22)

    def wait_idle(self, name: str, timeout: float = 150) -> None:
        """Until the server has unwound on its own: no lock holder, and no command of a lost
        orchestrator still stopping (it holds state/orchestrated.lock while it puts back what it
        changed; the standby timer's `expire-standby` may take the lock meanwhile and wait for it)."""
        deadline = time.monotonic() + timeout
        lock = "/home/deploy/state/orchestrated.lock"
        probe = f"[ ! -e {lock} ] || flock -n -E 99 {lock} true"  # never creates it (as root)
        while (self.server_status(name)["lock"] is not None
               or self.on(name, probe, check=False).returncode == 99
               or self.server_status(name)["lock"] is not None):
            assert time.monotonic() < deadline, f"{name} is still busy after {timeout}s: {self.server_status(name)}"
            time.sleep(0.5)


def _host_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("DEPLOYER_CONFIG", "DEPLOYER_DEBUG", "SSH_AUTH_SOCK")}


def _set_up_app_server(c: m.Container) -> None:
    run_guide_setup(c)
    adapt_config(c)
    c.run(f"sudo -u deploy git clone -q /home/deploy/apps/skinmenu.git {DEV_CHECKOUT}")


def _in_parallel(*tasks) -> None:
    errors: list[BaseException] = []

    def run(task):
        try:
            task()
        except BaseException as exc:  # noqa: BLE001 - re-raised below in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(task,)) for task in tasks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


@pytest.fixture(scope="module")
def fleet(rootfs, wheelhouse, share) -> Fleet:
    network = f.Network()
    work = Path(tempfile.mkdtemp(prefix=f"skinmenu-e2e-fleet-{os.getpid()}-", dir=m.WORK_ROOT))
    machines = {name: m.Container(rootfs, binds={WHEELHOUSE: wheelhouse, SHARE: share}, network=network.nspawn_args)
                for name in (*APP_SERVERS, "db1")}
    lb = None
    try:
        started = time.monotonic()
        _in_parallel(*(c.start for c in machines.values()))
        network.up_on_host()
        addresses = {name: network.join(c, 10 + i) for i, (name, c) in enumerate(machines.items())}
        figure(f"fleet: three containers booted in parallel in {time.monotonic() - started:.1f}s "
               f"on {network.bridge} ({network.address(0)}/24)")

        started = time.monotonic()
        password = secrets.token_urlsafe(18)
        url = f"postgres://skinmenu:{password}@{addresses['db1']}:5432/skinmenu"
        _in_parallel(lambda: f.start_postgresql(machines["db1"], network.subnet, password),
                     *(lambda c=machines[name]: _set_up_app_server(c) for name in APP_SERVERS))
        deploy_key = f.keygen(work / "deploy_key")
        known_hosts = []
        for name in APP_SERVERS:
            c = machines[name]
            f.point_at_database(c, url, addresses["db1"])
            host_key = f.start_sshd(c, Path(f"{deploy_key}.pub").read_text())
            known_hosts.append(f"{addresses[name]} {host_key}")
            f.wait_for_port(addresses[name], 22)
            f.wait_for_port(addresses[name], 443)
        f.wait_for_port(addresses["db1"], 5432)
        (work / "known_hosts").write_text("\n".join(known_hosts) + "\n")
        figure(f"fleet: app1 and app2 set up by docs/server-guide.md, db1 with PostgreSQL: "
               f"{time.monotonic() - started:.1f}s")

        config_file = work / "servers.yml"
        config_file.write_text(yaml.safe_dump({
            "servers": [{"name": name, "ssh": f"deploy@{addresses[name]}",
                         "roles": ["app", "migrations"] if name == "app1" else ["app"],
                         "config": "/home/deploy/releases.yml"} for name in APP_SERVERS],
            "deployer": DEPLOYER_ON_SERVER,
            "ssh": {"known_hosts": str(work / "known_hosts"), "identity": str(deploy_key), "connect_timeout": 5},
        }, sort_keys=False))
        lb = f.load_balancer(share / "tls", [addresses[name] for name in APP_SERVERS])
        yield Fleet(machines, addresses, share, lb, config_file, work)
    finally:
        started = time.monotonic()
        if lb is not None:
            lb.stop()
        # Throw-away machines: an orderly power-off gets 10 s (about 3 s when nothing hangs).
        _in_parallel(*(lambda c=c: c.stop(power_off_timeout=10) for c in machines.values()))
        network.remove()
        figure(f"fleet: load balancer and three containers stopped and removed in {time.monotonic() - started:.1f}s")
        if os.environ.get("SKINMENU_E2E_KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)


class LoadThroughBalancer:
    """The load client (tests/e2e/loadclient.py) on the host, through the load balancer."""

    def __init__(self, fleet: Fleet, label: str, workers: int = 4) -> None:
        self.label = label
        self.stop_file = fleet.work / "load.stop"
        ready = fleet.work / "load.ready"
        for path in (self.stop_file, ready):
            path.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).parent / "loadclient.py"), "--connect", "127.0.0.1",
             "--port", str(fleet.lb.port), "--cacert", str(fleet.share / "tls" / "ca.crt"), "--stop", str(self.stop_file),
             "--ready", str(ready), "--workers", str(workers), "--max-seconds", "600", "--path", "/", "--path", "/healthz"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert self.proc.poll() is None, f"load client died: {self.proc.communicate()}"
            assert time.monotonic() < deadline, "the load client never got a first 200 through the load balancer"
            time.sleep(0.1)
        time.sleep(1)

    def finish(self) -> dict:
        time.sleep(1)
        self.stop_file.touch()
        out, err = self.proc.communicate(timeout=120)
        assert self.proc.returncode == 0, f"load client failed: {err}"
        stats = json.loads(out)
        figure(f"fleet {self.label} through the load balancer: {stats['count']} requests in {stats['seconds']}s, "
               f"{stats['failed']} failed {stats['errors'][:3]}, worst latency {stats['worst_ms']} ms, "
               f"p50 {stats['p50_ms']} ms, p99 {stats['p99_ms']} ms, releases seen {stats.get('releases')}")
        return stats


def steady_through_balancer(fleet: Fleet, seconds: float = 5) -> dict:
    """The same load with nothing running: this run's steady p99, to compare the worst against."""
    load = LoadThroughBalancer(fleet, "steady (no operation)")
    time.sleep(seconds)
    return load.finish()


def latency_figure(operation: str, stats: dict, steady: dict) -> None:
    figure(f"fleet {operation}: worst latency through the load balancer {stats['worst_ms']} ms = "
           f"{stats['worst_ms'] / steady['p99_ms']:.1f}x the steady p99 ({steady['p99_ms']} ms) of this run")


def _flip_skew(pollers: dict, sha: str) -> float:
    seen = {name: poller.first_seen.get(sha) for name, poller in pollers.items()}
    assert all(seen.values()), f"a server never answered with {sha[:12]}: {seen}"
    return max(seen.values()) - min(seen.values())


# --- the story -----------------------------------------------------------------------------------

def test_check_sees_both_servers_host_keys_versions_and_their_own_checks(fleet):
    result = fleet.orchestrator("check")
    for name in APP_SERVERS:
        assert f"[{name}] ok    ssh deploy@{fleet.addresses[name]}" in result.stdout, result.output
    # No release is live yet: each server's own check says so, without failing (a fresh server).
    assert result.returncode == 0, result.output
    assert "FAIL" not in result.stdout, result.stdout


def test_an_unknown_host_key_is_refused_before_anything_runs(fleet):
    stranger = fleet.work / "stranger_known_hosts"
    key = f.keygen(fleet.work / "stranger")
    stranger.write_text("".join(f"{fleet.addresses[n]} {' '.join(Path(f'{key}.pub').read_text().split()[:2])}\n"
                                for n in APP_SERVERS))
    config = yaml.safe_load(fleet.config_file.read_text())
    config["ssh"]["known_hosts"] = str(stranger)
    wrong = fleet.work / "wrong-servers.yml"
    wrong.write_text(yaml.safe_dump(config))
    proc = subprocess.run([sys.executable, "-m", "deployer", "--config", str(wrong), "deploy", "main"],
                          capture_output=True, text=True, env=_host_env(), timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "host key" in proc.stderr.strip().splitlines()[-1]


def test_first_deploy_across_both_servers_migrates_the_shared_database_once(fleet):
    result = fleet.orchestrator("deploy", "main")
    assert result.returncode == 0, result.output
    sha = result.stdout.strip()
    fleet.shas["first"] = sha
    fleet.all_on(sha)
    assert fleet.healthz("app1")["database"] == "ok"
    assert "left to the migrations server" in result.stderr
    figure(f"fleet first deploy (2 servers, builds in parallel, cold uv caches): {result.seconds:.1f}s")
    status = json.loads(fleet.orchestrator("status", "--json").stdout)
    assert status["agree"] is True and status["current"] == sha


def test_check_and_status_pass_on_both_servers_once_a_release_is_live(fleet):
    result = fleet.orchestrator("check")
    assert result.returncode == 0, result.output
    for name in APP_SERVERS:
        assert f"[{name}] ok    ssh deploy@{fleet.addresses[name]}" in result.stdout
        assert f"[{name}] ok    database: postgresql database skinmenu on {fleet.addresses['db1']}:5432 answers" \
            in result.stdout, result.stdout
    assert "FAIL" not in result.stdout
    status = fleet.orchestrator("status")
    assert status.returncode == 0, status.output
    assert f"servers agree: all on {fleet.shas['first'][:12]}" in status.stdout, status.stdout


def test_a_deploy_under_load_through_the_load_balancer_fails_no_request(fleet):
    sha = fleet.commit("Second fleet commit")
    fleet.notes["steady"] = steady = steady_through_balancer(fleet)
    assert steady["failed"] == 0, steady["errors"]
    pollers = {name: f.Poller(fleet.addresses[name], fleet.share / "tls" / "ca.crt") for name in APP_SERVERS}
    load = LoadThroughBalancer(fleet, "deploy")
    result = fleet.orchestrator("deploy", "main")
    stats = load.finish()
    for poller in pollers.values():
        poller.stop()
    assert result.returncode == 0, result.output
    assert result.stdout.strip() == sha
    fleet.shas["second"] = sha
    fleet.all_on(sha)
    skew = _flip_skew(pollers, sha)
    figure(f"fleet deploy of a new commit (2 servers, standby): {result.seconds:.1f}s; flip skew between the "
           f"servers (first /healthz naming the new sha, pollers on each front door): {skew * 1000:.0f} ms")
    latency_figure("deploy", stats, steady)
    assert stats["failed"] == 0, stats["errors"]
    assert set(stats["releases"]) == {fleet.shas["first"], sha}, stats["releases"]  # the flip happened under load
    histories = [json.loads(fleet.on(n, "tail -n1 /home/deploy/state/history.jsonl").stdout) for n in APP_SERVERS]
    assert histories[0]["deploy_id"] == histories[1]["deploy_id"]


def test_a_rollback_under_load_fails_no_request(fleet):
    load = LoadThroughBalancer(fleet, "rollback")
    result = fleet.orchestrator("rollback")
    stats = load.finish()
    assert result.returncode == 0, result.output
    fleet.all_on(fleet.shas["first"])
    figure(f"fleet rollback (2 servers, warm standby: a relink): {result.seconds:.1f}s")
    latency_figure("rollback", stats, fleet.notes["steady"])
    assert stats["failed"] == 0, stats["errors"]


def test_a_server_failing_its_smoke_test_puts_every_server_back(fleet):
    config_path = "/home/deploy/releases.yml"
    original = fleet.machines["app2"].read(config_path)
    broken = yaml.safe_load(original)
    broken["smoke"]["paths"] = ["/", "/no-such-page-only-on-app2/"]
    broken["smoke"]["timeout"] = 5  # its retries would otherwise last 30 s: the 404 is final
    fleet.machines["app2"].write(config_path, yaml.safe_dump(broken, sort_keys=False), owner="deploy:deploy")
    try:
        load = LoadThroughBalancer(fleet, "deploy failing on app2")
        result = fleet.orchestrator("deploy", fleet.shas["second"])
        stats = load.finish()
    finally:
        fleet.machines["app2"].write(config_path, original, owner="deploy:deploy")
    assert result.returncode == 1, result.output
    assert result.stderr.strip().splitlines()[-1].startswith("deployer: error: app2: "), result.stderr
    fleet.all_on(fleet.shas["first"])
    for name in APP_SERVERS:
        last = json.loads(fleet.on(name, "tail -n1 /home/deploy/state/history.jsonl").stdout)
        assert last["to"] == fleet.shas["second"] and last["result"] == "failed-smoke", (name, last)
    assert stats["failed"] == 0, stats["errors"]
    assert set(stats.get("releases", {})) <= {fleet.shas["first"]}, stats.get("releases")


def _run_until_then_cut(fleet: Fleet, marker, name: str) -> tuple[subprocess.Popen, str]:
    running = fleet.start_orchestrator("deploy", "main")
    seen = []
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        line = running.stderr.readline()
        assert line, "the orchestrator ended before the cut: " + "".join(seen)
        seen.append(line)
        if marker(line):
            fleet.link(name, "down")
            break
    _, rest = running.communicate(timeout=300)
    return running, "".join(seen) + rest


def test_a_server_unreachable_during_the_build_changes_nothing_anywhere(fleet):
    sha = fleet.commit("Third fleet commit")
    fleet.shas["third"] = sha
    started = time.monotonic()
    try:
        running, output = _run_until_then_cut(fleet, lambda line: line.startswith("[app2] [4/8] create venv"), "app2")
    finally:
        cut_seconds = time.monotonic() - started
        fleet.link("app2", "up")
    assert running.returncode == 1, output
    last = output.strip().splitlines()[-1]
    assert last.startswith("deployer: error: app2: the connection was lost"), output
    assert last.endswith("nothing live was changed on any server")
    figure(f"fleet: app2 cut off during its build: exit 1 after {cut_seconds:.1f}s, nothing live changed")
    fleet.wait_idle("app2")
    fleet.all_on(fleet.shas["first"])


def test_a_server_unreachable_during_the_switch_and_the_next_deploy_brings_it_in_line(fleet):
    def prepared(line: str) -> bool:
        return line.startswith("[app2]") and "smoke test" in line and "socket" in line

    try:
        running, output = _run_until_then_cut(fleet, prepared, "app2")
        assert running.returncode == 1, output
        assert output.strip().splitlines()[-1].startswith("deployer: error: app2: the connection was lost"), output
        assert fleet.current("app1") == fleet.shas["first"]
        # app2, cut off, put itself back once the orchestrator's heartbeat stopped reaching it.
        fleet.wait_idle("app2")
        assert fleet.current("app2") == fleet.shas["first"]
    finally:
        fleet.link("app2", "up")
    status = json.loads(fleet.orchestrator("status", "--json").stdout)
    assert status["agree"] is True and status["current"] == fleet.shas["first"]

    again = fleet.orchestrator("deploy", "main")
    assert again.returncode == 0, again.output
    fleet.all_on(fleet.shas["third"])
    figure(f"fleet: after app2 came back, the next deploy put both on the new release in {again.seconds:.1f}s")


# --- clean-up after a killed session (last: it needs no fleet, and cannot break the story) -------

def test_a_killed_sessions_load_balancer_and_empty_network_zone_are_reaped(e2e_host, tmp_path):
    """kill -9 of a test session runs no finalizer: the next session's reap_stale must end the
    load balancer it left (an nginx in its own session) and remove the zone bridge it left."""
    tls = m.make_test_ca(tmp_path / "tls")
    script = (f"import json, os, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
              "import fleet_machines as f; "
              f"lb = f.load_balancer(__import__('pathlib').Path({str(tls['ca'].parent)!r}), ['127.0.0.1']); "
              "print(json.dumps({'dir': str(lb.directory), 'nginx': lb.process.pid}), flush=True); "
              "os.kill(os.getpid(), 9)")
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert killed.returncode == -9, killed.stderr
    left = json.loads(killed.stdout)
    directory, nginx = Path(left["dir"]), left["nginx"]
    bridge = f"vz-{m.ZONE_PREFIX}reap{os.getpid() % 1000}"
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    try:
        assert directory.exists() and m._alive(nginx)  # what a killed session leaves
        m.reap_stale()
        deadline = time.monotonic() + 10
        while m._alive(nginx) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not m._alive(nginx), "the killed session's load balancer still runs"
        assert not directory.exists()
        assert subprocess.run(["ip", "link", "show", bridge], capture_output=True).returncode != 0
    finally:
        subprocess.run(["ip", "link", "delete", bridge], capture_output=True)
        if m._alive(nginx):
            os.kill(nginx, 9)
