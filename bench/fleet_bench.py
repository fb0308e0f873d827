#!/usr/bin/env python3
"""Multi-server benchmark (issue 11): one deploy across 1, 2 and 3 servers, the flip skew between
servers, and building a release on each server against shipping one built elsewhere.

    make bench                                     # runs this after bench/deploy_bench.py
    .venv/bin/python bench/fleet_bench.py --runs 3
    .venv/bin/python bench/fleet_bench.py --runs 2 --no-doc --keep-scratch   # try things out

Everything happens in a scratch directory under /tmp that the benchmark creates and removes:

1. a scratch git source repository made from this working tree's app/ (as bench/deploy_bench.py
   makes it): a base commit and one commit per measured deploy and per shipped release, each
   changing one CSS line and one template line, never the requirements;
2. three "servers" on this machine: three deploy roots, each with its own releases.yml,
   `service.strategy: standby` (two gunicorns, blue and green, on unix sockets, started by
   scripts/local-service), its own front door (scripts/local-service `front`, the stand-in for
   nginx that the integration tests use, on its own port) and its own uv cache
   (`deploy_to/.cache/uv`, the production default); one shared database: app1's SQLite file,
   which app2 and app3 reach through `DJANGO_DB_PATH` in their env files, as the orchestrator's
   integration tests do (tests/integration/fleet_setup.py);
3. one private OpenSSH server on 127.0.0.1 (tests/integration/sshd_server.py: its own host key
   and client key; the key authorized with `restrict`, as the server guide advises), through
   which the orchestrator reaches every server with strict host keys; three orchestrator
   configs: app1; app1 + app2; app1 + app2 + app3;
4. DEPLOY: warm-ups (a first deploy of the base commit on app1, then on all three, then one more
   commit on all three), then RUNS rounds of `deployer --config fleetN.yml deploy <new commit>`
   for N = 1, 2, 3 (the order reversed every other round), timed from command start to exit
   (every server's own smoke test has passed by then);
5. SKEW: during every deploy one poller per server asks that server's front door for /healthz
   (a new connection each time, as the front door routes a connection when it opens) and notes
   when it first answers with the new sha; the skew is the latest first answer minus the
   earliest, with the polling resolution beside it;
6. SHIP vs BUILD: RUNS more commits, each built on app1 (`deployer release`), then brought to
   app3 by building it there (`deployer release`) and to app2 by shipping app1's build with
   `rsync -a --link-dest=<app2's live release>` into a temp dir renamed into releases/<sha> (both
   local: no network in the figure, the bytes that would cross it are reported); app2's
   `activate --plan --json` must accept the shipped release (RELEASE.json, REVISION, digests);
7. a results table written into docs/benchmarks-fleet.md with the machine and the exact
   command; the raw numbers saved as JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests" / "integration"))

import deploy_bench as db  # noqa: E402  (the scratch source, the helpers, the machine table)
import sshd_server  # noqa: E402  (the private sshd of the orchestrator's integration tests)

from deploy_bench import BenchError, log, run, stats  # noqa: E402

DOC = REPO / "docs" / "benchmarks-fleet.md"
RESULTS_DIR = REPO / "bench" / "results"
LOCAL_SERVICE = REPO / "scripts" / "local-service"
DEPLOYER = Path(sys.executable).parent / "deployer"
SERVERS = ("app1", "app2", "app3")
TARGET_RATIO_3_TO_1 = 1.5  # issue 11: deploying to 3 servers takes at most 1.5x the time of 1
STANDBY_SECONDS = 600  # the production default: the old colour stays warm
SLOW_POLL_S = 0.25  # pollers idle at this pace until the switch phase starts
BUILT_RE = re.compile(r"^\[(app\d)\] built ([0-9a-f]{12}) in ([0-9.]+)s")
STEP_RE = re.compile(r"^\[(app\d)\] \[(\d+)/\d+\] (.*?) ?\.* (ok|FAILED) ([0-9.]+)s")


# --- the servers ---------------------------------------------------------------------------------


class Server:
    """One deploy root driven by its own releases.yml, standby colours behind its own front door."""

    def __init__(self, name: str, root: Path, source: Path, python: str, secret: str, port: int,
                 database: Path | None, uv_cache: Path | None) -> None:
        self.name = name
        self.root = root
        self.deploy_to = root / "deploy"
        self.port = port
        self.config = root / "releases.yml"
        self.env_file = root / "skinmenu.env"
        (self.deploy_to / "run").mkdir(parents=True)
        env = {"DJANGO_SECRET_KEY": secret, "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
               "DJANGO_CSRF_TRUSTED_ORIGINS": f"http://127.0.0.1:{port}",
               "WAGTAILADMIN_BASE_URL": f"http://127.0.0.1:{port}", "DJANGO_SECURE_SSL_REDIRECT": "false"}
        if database is not None:
            env["DJANGO_DB_PATH"] = str(database)  # the one shared database (app1's file)
        fd = os.open(self.env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.writelines(f"{k}={v}\n" for k, v in env.items())
        colour = [sys.executable, str(LOCAL_SERVICE), "--root", str(self.deploy_to), "--colour", "{colour}",
                  "--socket", f"{self.deploy_to}/run/{{colour}}.sock", "--env-file", str(self.env_file),
                  "--workers", "1"]
        config = {
            "app": "skinmenu", "repo": str(source), "deploy_to": str(self.deploy_to), "python": python,
            "keep_releases": 50,
            "django": {"project_dir": "app", "settings": db.SETTINGS, "requirements": "app/requirements.txt"},
            "env_file": str(self.env_file), "required_env": db.REQUIRED_ENV, "shared_dirs": ["media", "db"],
            "service": {"strategy": "standby", "standby_seconds": STANDBY_SECONDS,
                        "start": shlex.join(colour + ["start"]), "stop": shlex.join(colour + ["stop"]),
                        "is_active": shlex.join(colour + ["status"]),
                        "socket": f"{self.deploy_to}/run/{{colour}}.sock"},
            "smoke": {"url": f"http://127.0.0.1:{port}", "check_static": False, "timeout": 30},
        }
        if uv_cache is not None:
            config["install"] = {"cache_dir": str(uv_cache)}
        self.config.write_text("# Written by bench/fleet_bench.py: one server of the scratch fleet.\n"
                               + json.dumps(config, indent=2) + "\n")  # JSON is YAML
        run([sys.executable, LOCAL_SERVICE, "--root", self.deploy_to, "--bind", f"127.0.0.1:{port}", "front"])

    def deployer(self, *args: str) -> subprocess.CompletedProcess:
        return run([DEPLOYER, "--config", self.config, *args], env=db.clean_env(),
                   what=f"{self.name}: deployer {' '.join(args)}")

    def release_dir(self, sha: str) -> Path:
        return self.deploy_to / "releases" / sha

    @property
    def current(self) -> Path:
        return (self.deploy_to / "current").resolve()

    def stop(self) -> None:
        for colour in ("blue", "green"):
            subprocess.run([sys.executable, str(LOCAL_SERVICE), "--root", str(self.deploy_to), "--colour", colour,
                            "--socket", f"{self.deploy_to}/run/{colour}.sock", "stop"], capture_output=True)
        subprocess.run([sys.executable, str(LOCAL_SERVICE), "--root", str(self.deploy_to), "front-stop"],
                       capture_output=True)


# --- pollers: when does each front door first serve the new sha? --------------------------------


class Poller:
    """Asks one front door for /healthz, a new connection each time; slowly until `fast` is set,
    then as fast as it answers. `polls` holds (monotonic time of the answer, release)."""

    def __init__(self, port: int, fast: threading.Event) -> None:
        self.port = port
        self.fast = fast
        self.polls: list[tuple[float, str | None]] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _ask(self) -> str | None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.request("GET", "/healthz", headers={"Host": "127.0.0.1", "Connection": "close"})
            response = connection.getresponse()
            body = response.read()
            return json.loads(body).get("release") if response.status == 200 else None
        finally:
            connection.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                release = self._ask()
            except (OSError, http.client.HTTPException, ValueError):
                self.errors += 1
                release = None
            self.polls.append((time.monotonic(), release))
            if not self.fast.is_set():
                self.fast.wait(SLOW_POLL_S)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def flip(self, sha: str) -> dict | None:
        """When this front door first answered `sha`, and the last answer before it (the window
        the flip happened in)."""
        before = None
        for at, release in self.polls:
            if release == sha:
                return {"first": at, "window": at - before if before is not None else None}
            before = at
        return None

    def interval(self, since: float) -> float | None:
        """Median time between polls after `since` (the fast phase)."""
        times = [at for at, _ in self.polls if at >= since]
        gaps = [b - a for a, b in zip(times, times[1:])]
        return statistics.median(gaps) if gaps else None


# --- the scratch fleet ---------------------------------------------------------------------------


class Fleet:
    def __init__(self, root: Path, runs: int, uv_cache: Path | None) -> None:
        self.root = root
        self.runs = runs
        self.src = root / "src"
        self.python = run([db.FIND_PYTHON]).stdout.strip()
        self.sshd = sshd_server.start(root / "sshd")
        self._restrict_key()
        secret = secrets.token_urlsafe(50)  # the same key on every server (the guide, §17.1)
        ports: list[int] = []
        while len(ports) < len(SERVERS):
            port = db.free_port()
            if port not in ports and port != self.sshd.port:
                ports.append(port)
        self.servers: list[Server] = []
        for index, name in enumerate(SERVERS):
            database = None if index == 0 else self.servers[0].deploy_to / "shared" / "db" / "skinmenu.sqlite3"
            self.servers.append(Server(name, root / name, self.src, self.python, secret, ports[index], database,
                                       uv_cache))
        self.configs = {n: self._fleet_config(n) for n in (1, 2, 3)}

    def _restrict_key(self) -> None:
        """The orchestrator's key as the server guide (§17.4) authorizes it: no pty, no forwarding."""
        authorized = self.sshd.root / "authorized_keys"
        authorized.write_text(f'restrict,from="127.0.0.1" {authorized.read_text()}')

    def _fleet_config(self, n: int) -> Path:
        path = self.root / f"fleet{n}.yml"
        config = {
            "servers": [{"name": s.name, "ssh": f"{self.sshd.user}@127.0.0.1", "port": self.sshd.port,
                         "roles": ["app", "migrations"] if i == 0 else ["app"], "config": str(s.config)}
                        for i, s in enumerate(self.servers[:n])],
            "deployer": str(DEPLOYER),
            "ssh": {"known_hosts": str(self.sshd.known_hosts), "identity": str(self.sshd.client_key),
                    "connect_timeout": 10},
        }
        path.write_text("# Written by bench/fleet_bench.py.\n" + json.dumps(config, indent=2) + "\n")
        return path

    # the source repository (the same recipe as bench/deploy_bench.py)

    def make_source(self, commits: int) -> list[str]:
        maker = db.Scratch.__new__(db.Scratch)  # only its source-making methods, not its worlds
        maker.src, maker.runs = self.src, commits - 2  # it makes a base commit and runs + 1 more
        return maker.make_source()

    # the orchestrator

    def orchestrate(self, n: int, *args: str,
                    fast: threading.Event | None = None) -> tuple[float, list[tuple[float, str]], float]:
        """Run the orchestrator to completion; returns its wall time, its stderr lines (each with
        the monotonic time it arrived) and when it started. The pollers go fast at the first line of the switch
        phase ("[all] deploy id …", printed after every server is built)."""
        argv = [str(DEPLOYER), "--config", str(self.configs[n]), *args]
        env = {k: v for k, v in db.clean_env().items() if k != "SSH_AUTH_SOCK"}
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)
        lines: list[tuple[float, str]] = []
        out: list[str] = []
        reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)
        reader.start()
        for line in proc.stderr:
            lines.append((time.monotonic(), line.rstrip("\n")))
            if fast is not None and line.startswith("[all] deploy id"):
                fast.set()
        code = proc.wait(timeout=db.CMD_TIMEOUT)
        seconds = time.monotonic() - started
        reader.join()
        if code != 0:
            raise BenchError(f"deployer --config fleet{n}.yml {' '.join(args)} exited with {code}:\n"
                             + db.tail("\n".join(text for _, text in lines), 40))
        return seconds, lines, started

    def deploy(self, n: int, sha: str) -> dict:
        fast = threading.Event()
        pollers = [Poller(s.port, fast) for s in self.servers[:n]]
        try:
            seconds, lines, started = self.orchestrate(n, "deploy", sha, fast=fast)
        finally:
            for poller in pollers:
                poller.stop()
        switch_at = next((at for at, text in lines if text.startswith("[all] deploy id")), None)
        built = {m.group(1): float(m.group(3)) for _, text in lines if (m := BUILT_RE.match(text))}
        flips = {s.name: p.flip(sha) for s, p in zip(self.servers, pollers)}
        missing = [name for name, flip in flips.items() if flip is None]
        if missing:
            raise BenchError(f"deploy of {sha[:12]} to {n} server(s): {', '.join(missing)} never answered it "
                             f"on its front door")
        firsts = [flip["first"] for flip in flips.values()]
        result = {
            "servers": n, "sha": sha, "seconds": round(seconds, 3),
            "build_seconds": built,  # each server's own "built <sha> in Ns"
            "switch_phase_seconds": round(started + seconds - switch_at, 3) if switch_at else None,
            "until_switch_seconds": round(switch_at - started, 3) if switch_at else None,
            "skew_seconds": round(max(firsts) - min(firsts), 4),
            "flip_windows": {name: flip["window"] and round(flip["window"], 4) for name, flip in flips.items()},
            "poll_intervals": {s.name: p.interval(switch_at or 0) for s, p in zip(self.servers, pollers)},
            "poll_errors": {s.name: p.errors for s, p in zip(self.servers, pollers)},
            "load1": db.loadavg()[0],
            "timeline": [[round(at - started, 3), text] for at, text in lines],
        }
        for server in self.servers[:n]:
            if server.current.name != sha:
                raise BenchError(f"{server.name}: current is {server.current.name[:12]} after deploying {sha[:12]}")
        return result

    # ship vs build

    def ship(self, sha: str, order: tuple[str, ...]) -> dict:
        """app1 builds `sha`; app3 builds it too (the deployer's way); app2 gets app1's build by
        rsync --link-dest against its live release, once as the issue names it (-a) and once
        comparing contents (-a --checksum), each checked by app2's own verification."""
        app1, app2, app3 = self.servers
        build1, _ = db.timed([DEPLOYER, "--config", app1.config, "release", sha], env=db.clean_env())
        build3, proc3 = db.timed([DEPLOYER, "--config", app3.config, "release", sha], env=db.clean_env())
        result = {"sha": sha, "build_app1_seconds": round(build1, 3), "build_seconds": round(build3, 3),
                  "build_steps": db.parse_steps(proc3.stderr),
                  "disk_added_build": db.du_each([app3.current, app3.release_dir(sha)])[1]}
        for variant in order:
            result[variant] = self._rsync_into_app2(sha, variant)
            if variant != order[-1]:
                shutil.rmtree(app2.release_dir(sha))
        if result["checksum"]["refused"]:
            raise BenchError(f"app2 refuses the release shipped with --checksum: {result['checksum']['refused']}")
        result["load1"] = db.loadavg()[0]
        return result

    def _rsync_into_app2(self, sha: str, variant: str) -> dict:
        app1, app2 = self.servers[0], self.servers[1]
        live = app2.current
        tmp = app2.deploy_to / "releases" / f".tmp-ship-{sha}"
        flags = ["-a"] + (["--checksum"] if variant == "checksum" else [])
        argv = ["rsync", *flags, "--stats", f"--link-dest={live}", f"{app1.release_dir(sha)}/", f"{tmp}/"]
        db.settle_disk(20)
        started = time.perf_counter()
        proc = run(argv, what=f"rsync {' '.join(flags)} --link-dest")
        os.rename(tmp, app2.release_dir(sha))
        seconds = time.perf_counter() - started
        plan = json.loads(subprocess.run([DEPLOYER, "--config", app2.config, "activate", sha, "--plan", "--json"],
                                         capture_output=True, text=True, env=db.clean_env()).stdout or "{}")
        refused = plan.get("refused") if plan.get("exit_code") != 0 or plan.get("refused") else None
        if plan.get("exit_code") not in (0, 1):
            refused = f"activate --plan exited {plan.get('exit_code')}: {plan}"
        return {"seconds": round(seconds, 3), "rsync": parse_rsync_stats(proc.stdout), "refused": refused,
                "disk_added": db.du_each([live, app2.release_dir(sha)])[1]}

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        self.sshd.stop()


def parse_rsync_stats(text: str) -> dict:
    """rsync --stats: files, files transferred, bytes of the transferred files, literal data."""
    def number(label: str) -> int:
        m = re.search(rf"^{re.escape(label)}: ([\d,]+)", text, re.M)
        return int(m.group(1).replace(",", "")) if m else 0
    files = re.search(r"^Number of files: ([\d,]+) \(reg: ([\d,]+)", text, re.M)
    return {
        "files": int(files.group(1).replace(",", "")) if files else 0,
        "regular_files": int(files.group(2).replace(",", "")) if files else 0,
        "regular_files_transferred": number("Number of regular files transferred"),
        "total_file_size": number("Total file size"),
        "transferred_file_size": number("Total transferred file size"),
        "literal_data": number("Literal data"),
    }


# --- the run -------------------------------------------------------------------------------------


def bench(fleet: Fleet, shas: list[str], runs: int) -> dict:
    base, warm, rest = shas[0], shas[1], shas[2:]
    deploy_shas, ship_shas = rest[:3 * runs], rest[3 * runs:]
    results: dict = {"warmup": {}, "deploys": [], "ships": []}
    log("warm-up: first deploy of the base commit on app1 (an empty database, migrated once)")
    results["warmup"]["first_app1"] = round(fleet.orchestrate(1, "deploy", base)[0], 2)
    log(f"  {results['warmup']['first_app1']:.1f}s; on all three (app1 already live; app2, app3 fill their uv caches)")
    results["warmup"]["first_all"] = round(fleet.orchestrate(3, "deploy", base)[0], 2)
    log(f"  {results['warmup']['first_all']:.1f}s; one more commit on all three (both colours used everywhere)")
    results["warmup"]["second_all"] = round(fleet.orchestrate(3, "deploy", warm)[0], 2)
    log(f"  {results['warmup']['second_all']:.1f}s")
    results["cpu_reference"] = [db.cpu_reference()]
    commits = iter(deploy_shas)
    for round_ in range(runs):
        for n in ((1, 2, 3) if round_ % 2 == 0 else (3, 2, 1)):
            result = fleet.deploy(n, next(commits))
            results["deploys"].append(result)
            log(f"round {round_ + 1}: deploy to {n} server(s) {result['seconds']:.2f}s "
                f"(builds {', '.join(f'{k} {v:.1f}s' for k, v in sorted(result['build_seconds'].items()))}; "
                f"switch phase {result['switch_phase_seconds']}s; skew {result['skew_seconds'] * 1000:.1f} ms)")
    results["cpu_reference"].append(db.cpu_reference())
    for index, sha in enumerate(ship_shas):
        order = ("plain", "checksum") if index % 2 == 0 else ("checksum", "plain")
        result = fleet.ship(sha, order)
        results["ships"].append(result)
        log(f"ship {sha[:12]}: build there {result['build_seconds']:.2f}s; "
            + "; ".join(f"rsync {variant} {result[variant]['seconds']:.2f}s "
                        f"({result[variant]['rsync']['literal_data'] / db.MB:.1f} MB literal, "
                        f"{result[variant]['disk_added'] / db.MB:.1f} MB disk, "
                        f"{'refused: ' + result[variant]['refused'] if result[variant]['refused'] else 'accepted'})"
                        for variant in ("plain", "checksum")))
    results["cpu_reference"].append(db.cpu_reference())
    return results


def summarize(results: dict) -> dict:
    by_n = {n: [d for d in results["deploys"] if d["servers"] == n] for n in (1, 2, 3)}
    summary = {f"deploy_{n}": stats([d["seconds"] for d in ds]) for n, ds in by_n.items()}
    summary["ratio_3_to_1"] = summary["deploy_3"]["median"] / summary["deploy_1"]["median"]
    summary["ratio_2_to_1"] = summary["deploy_2"]["median"] / summary["deploy_1"]["median"]
    for n, ds in by_n.items():
        summary[f"build_max_{n}"] = stats([max(d["build_seconds"].values()) for d in ds if d["build_seconds"]])
        summary[f"switch_{n}"] = stats([d["switch_phase_seconds"] for d in ds if d["switch_phase_seconds"]])
    for n in (2, 3):
        summary[f"skew_{n}"] = stats([d["skew_seconds"] for d in by_n[n]])
        windows = [w for d in by_n[n] for w in d["flip_windows"].values() if w is not None]
        summary[f"flip_window_{n}"] = stats(windows) if windows else None
        intervals = [i for d in by_n[n] for i in d["poll_intervals"].values() if i is not None]
        summary[f"poll_interval_{n}"] = stats(intervals) if intervals else None
    ships = results["ships"]
    summary["build_there"] = stats([s["build_seconds"] for s in ships])
    summary["disk_build"] = stats([s["disk_added_build"] for s in ships])
    summary["release_bytes"] = stats([s["plain"]["rsync"]["total_file_size"] for s in ships])
    summary["release_files"] = stats([s["plain"]["rsync"]["regular_files"] for s in ships])
    for variant in ("plain", "checksum"):
        summary[f"ship_{variant}"] = stats([s[variant]["seconds"] for s in ships])
        summary[f"literal_{variant}"] = stats([s[variant]["rsync"]["literal_data"] for s in ships])
        summary[f"files_{variant}"] = stats([s[variant]["rsync"]["regular_files_transferred"] for s in ships])
        summary[f"disk_{variant}"] = stats([s[variant]["disk_added"] for s in ships])
        summary[f"refused_{variant}"] = sum(1 for s in ships if s[variant]["refused"])
        summary[f"ship_{variant}_to_build"] = summary[f"ship_{variant}"]["median"] / summary["build_there"]["median"]
    summary["refusals_plain"] = sorted({s["plain"]["refused"] for s in ships if s["plain"]["refused"]})
    return summary


def fmt(s: dict | None, unit: str = "s", scale: float = 1.0, digits: int = 2) -> tuple[str, str]:
    if not s:
        return "—", "—"
    return (f"{s['median'] * scale:.{digits}f} {unit}",
            f"{s['min'] * scale:.{digits}f}–{s['max'] * scale:.{digits}f}")


def render_doc(results: dict, summary: dict, command: str) -> str:
    mi = results["machine"]
    runs = results["runs"]
    ratio = summary["ratio_3_to_1"]
    verdict = (f"meets (≤ {TARGET_RATIO_3_TO_1}×)" if ratio <= TARGET_RATIO_3_TO_1
               else f"**misses** (≤ {TARGET_RATIO_3_TO_1}×)")
    loads = [d["load1"] for d in results["deploys"]] + [s["load1"] for s in results["ships"]]
    rows_deploy = []
    for n in (1, 2, 3):
        median, spread = fmt(summary[f"deploy_{n}"])
        build, _ = fmt(summary[f"build_max_{n}"])
        switch, _ = fmt(summary[f"switch_{n}"])
        ratio_n = "1.00×" if n == 1 else f"{summary[f'ratio_{n}_to_1']:.2f}×"
        target = verdict if n == 3 else "—"
        rows_deploy.append(f"| {n} | {median} | {spread} | {ratio_n} | {build} | {switch} | {target} |")
    rows_skew = []
    for n in (2, 3):
        skew, skew_spread = fmt(summary[f"skew_{n}"], "ms", 1000, 1)
        window, _ = fmt(summary[f"flip_window_{n}"], "ms", 1000, 1)
        interval, _ = fmt(summary[f"poll_interval_{n}"], "ms", 1000, 1)
        rows_skew.append(f"| {n} | {skew} | {skew_spread} | {interval} | {window} |")
    ship, ship_spread = fmt(summary["ship"])
    build, build_spread = fmt(summary["build_there"])
    mb = db.MB
    ship_mb = summary["ship_bytes"]["median"] / mb
    release_mb = summary["release_bytes"]["median"] / mb
    cpu = " / ".join(f"{x:.3f} s" for x in results["cpu_reference"])
    steps = {}
    for s in results["ships"]:
        for name, value in s["build_steps"].items():
            steps.setdefault(name, []).append(value)
    step_text = ", ".join(f"{name} {statistics.median(values):.2f} s" for name, values in steps.items())
    return db.reflow(f"""# Multi-server benchmark

One deploy across 1, 2 and 3 servers, the flip skew between servers, and building a release on
each server against shipping one built elsewhere (issue 11, docs/design.md §13), measured in the
same run on one machine. Generated by `bench/fleet_bench.py`; do not edit by hand, run the
benchmark again.

Command (`make bench` runs it after `bench/deploy_bench.py`):

```
{command}
```

Run on {results['date']} with {runs} measured deploys per server count and {len(results['ships'])}
shipped releases. Raw numbers: `bench/results/{results['json_name']}` (not committed).

| machine | |
|---|---|
| cores (`nproc`) | {mi['nproc']} |
| CPU | {mi['cpu']} |
| memory | {mi['memory']} |
| kernel, filesystem of /tmp | {mi['kernel']}, {mi['filesystem']} |
| release Python (`scripts/find-python`) | {mi['release_python']} |
| uv, rsync | {mi['uv']}, {results['rsync_version']} |
| deployer at | `{mi['repo_head']}`{' (with uncommitted changes)' if mi['repo_dirty'] else ''} |
| load average (1, 5, 15 min) at start / end | {' '.join(map(str, results['load_start']))} / {' '.join(map(str, results['load_end']))} |
| 1-min load average after each measurement | median {statistics.median(loads):.2f}, max {max(loads):.2f} |
| CPU reference (fixed pure-Python work, best of 3) at start, after the deploys, after the shipping | {cpu} |

**What runs.** Three "servers" on this one machine: three deploy roots, each with its own
releases.yml, `service.strategy: standby` (blue and green gunicorns on unix sockets, one worker
each, started by `scripts/local-service`), its own front door (`scripts/local-service front`,
the integration tests' stand-in for nginx, which routes each connection to `live.sock`) and its
own uv cache (`deploy_to/.cache/uv`, as in production). One database for all: app1's SQLite
file, which app2 and app3 reach through `DJANGO_DB_PATH` (as `tests/integration/fleet_setup.py`
does; the stand-in for one PostgreSQL server), so migrations run once, on app1. The orchestrator
(`deployer --config fleetN.yml`) reaches every server through one private OpenSSH server on
127.0.0.1 (`tests/integration/sshd_server.py`) with strict host keys and the client key
authorized with `restrict,from="127.0.0.1"`, as the server guide (§17.4) advises. The source
is a scratch git repository made from this working tree's `app/`, one commit per measurement,
each changing one CSS line and one template line, never the requirements. Warm-ups: the first
deploy of the base commit on app1 ({results['warmup']['first_app1']:.1f} s, an empty database
migrated), then on all three ({results['warmup']['first_all']:.1f} s: app2 and app3 fill their
uv caches), then one more commit on all three ({results['warmup']['second_all']:.1f} s). Then
{runs} rounds of one deploy each to 1, 2 and 3 servers (the order reversed every other round),
each of a new commit.

## Deploy to 1, 2 and 3 servers

`deployer --config fleetN.yml deploy <new commit>`, from command start to exit: every server
locked, the ref resolved once, the release built on every server in parallel (`parallel`
defaults to all servers), migrations checked once on app1, every server's idle colour started
and smoke-tested on its own socket, all relinked at once, each smoke-tested through its own
front door, then committed.

| servers | median | min–max | vs 1 server | slowest build (median) | switch phase (median) | target |
|---:|---:|---:|---:|---:|---:|---|
{chr(10).join(rows_deploy)}

"Slowest build" is the largest of the servers' own `built <sha> in N s`; "switch phase" runs from
the orchestrator's `[all] deploy id …` line (every server built) to its exit. The builds run at
the same time, each a CPU-bound job (a uv venv copy, one Django process for the checks and
collectstatic): on {mi['nproc']} cores, three builds cannot take the time of one, and the ratio
measures this machine's cores as much as the orchestrator. On real servers each build has its
own machine, and the added cost is the SSH round trips and the barrier: compare the switch
phases above.

## Flip skew with standby

One poller per server asks its front door for `/healthz` during every deploy (a new connection
each time: the front door routes a connection to the live colour when it opens), slowly until
the orchestrator prints `[all] deploy id …`, then as fast as it answers. The skew is the latest
server's first answer with the new sha minus the earliest server's. "Flip window" is, per
server, the time between its last answer with the old sha and its first with the new one: the
resolution of each first answer.

| servers | skew (median) | min–max | time between polls (median) | flip window per server (median) |
|---:|---:|---:|---:|---:|
{chr(10).join(rows_skew)}

## Build on each server, or build once and ship

The issue asks to compare "build on each in parallel" with "build once and ship with rsync
--link-dest". Here both are measured on one machine, per release: app1 builds the commit
(`deployer release`); app3 builds it too (the deployer's way: the time below); app2 receives
app1's build with `rsync -a --link-dest=<app2's live release>` into a temp dir renamed into
`releases/<sha>`. app2's `activate --plan --json` then accepted every shipped release (its
`RELEASE.json`, `REVISION` and digests verify there), and the tree digests were equal on all
three.

| per release | median | min–max |
|---|---:|---:|
| build it there: `deployer release <sha>` | {build} | {build_spread} |
| ship it: `rsync -a --link-dest` (local, no network) + rename | {ship} | {ship_spread} |
| ship / build | {summary['ship_to_build']:.2f}× | |
| files in the release / regular files rsync copied | {summary['release_files']['median']:.0f} / {summary['ship_files']['median']:.0f} | |
| bytes in the release / bytes rsync copied (what would cross the network) | {release_mb:.1f} MB / {ship_mb:.1f} MB | |
| disk a release adds (GNU du, hardlinks once): shipped / built | {summary['disk_ship']['median'] / mb:.1f} MB / {summary['disk_build']['median'] / mb:.1f} MB | |

The build's steps (medians): {step_text}.

**What the figures say.** rsync's `--link-dest` hardlinks a file only when its size and
modification time equal those of the same path in the live release; everything else is copied
whole. Every server fills its own uv cache, so the venv's files carry that server's unpack
times, and the files of a new commit's tree carry the commit's time: of
{summary['release_files']['median']:.0f} entries, rsync copied {summary['ship_files']['median']:.0f}
files, {ship_mb:.1f} of {release_mb:.1f} MB. Between machines those bytes cross the network,
and a shipped release no longer shares its venv with the target's uv cache (the disk it adds,
above). A build there reuses the previous release's venv by `cp -al` and the live release's
static files by hardlink, and costs CPU on each server instead. The orchestrator builds on each
server (docs/design.md §13); shipping would need the same Python at the same path on every
server (the venv's interpreter link), and pays off only where a build is much slower than
copying its bytes over the network, e.g. a requirements change that compiles wheels.
""")


def main() -> int:
    parser = argparse.ArgumentParser(description="Multi-server benchmark: deploy to 1, 2, 3 servers; flip skew; ship vs build.")
    parser.add_argument("--runs", type=int, default=3, help="measured deploys per server count, and releases shipped (default 3)")
    parser.add_argument("--uv-cache", type=Path, help="one uv cache for all servers (default: each server its own)")
    parser.add_argument("--no-doc", action="store_true", help=f"do not rewrite {DOC.relative_to(REPO)}")
    parser.add_argument("--keep-scratch", action="store_true", help="leave the scratch dir in place (its gunicorns are stopped all the same)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.runs < 3 and not args.no_doc:
        log(f"note: --runs {args.runs} is below 3 (a median of a few runs); the doc will not be written")
        args.no_doc = True
    if not shutil.which("rsync"):
        log("fleet_bench: error: rsync is not installed (apt-get install rsync)")
        return 2

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    started = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="skinmenu-fleet-bench-", dir="/tmp"))
    command = shlex.join([os.path.relpath(sys.executable, REPO) if sys.executable.startswith(str(REPO)) else sys.executable,
                          os.path.relpath(__file__, REPO) if os.getcwd() == str(REPO) else __file__, *sys.argv[1:]])
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    results: dict = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "runs": args.runs, "command": command,
        "json_name": f"fleet-bench-{stamp}.json", "io_settled_avg10": db.settle_disk(),
        "load_start": db.loadavg(), "scratch": str(scratch),
        "rsync_version": run(["rsync", "--version"]).stdout.splitlines()[0].split("  ")[0],
    }
    fleet = None
    code = 0
    try:
        fleet = Fleet(scratch, args.runs, args.uv_cache)
        results["machine"] = db.machine_info(fleet.python)
        log(f"scratch dir {scratch}; sshd on 127.0.0.1:{fleet.sshd.port}; front doors "
            + ", ".join(f"{s.name} :{s.port}" for s in fleet.servers) + f"; load average {results['load_start']}")
        shas = fleet.make_source(2 + 4 * args.runs)
        results.update(bench(fleet, shas, args.runs))
        results["load_end"] = db.loadavg()
        results["wall_seconds"] = round(time.monotonic() - started, 1)
        summary = summarize(results)
        results["summary"] = summary
        log(f"deploy medians: 1 server {summary['deploy_1']['median']:.2f}s, 2 servers {summary['deploy_2']['median']:.2f}s, "
            f"3 servers {summary['deploy_3']['median']:.2f}s (3/1 = {summary['ratio_3_to_1']:.2f}x, target "
            f"<= {TARGET_RATIO_3_TO_1}x); skew 3 servers {summary['skew_3']['median'] * 1000:.1f} ms; "
            f"ship {summary['ship']['median']:.2f}s vs build {summary['build_there']['median']:.2f}s")
        if not args.no_doc:
            DOC.write_text(render_doc(results, summary, command))
            log(f"wrote {DOC.relative_to(REPO)}")
    except BenchError as exc:
        log(f"fleet_bench: error: {exc}")
        results["error"] = str(exc)
        code = 1
    except KeyboardInterrupt:
        log("fleet_bench: interrupted")
        results["error"] = "interrupted"
        code = 130
    finally:
        if fleet is not None:
            fleet.stop()
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        (RESULTS_DIR / results["json_name"]).write_text(json.dumps(results, indent=2, default=str) + "\n")
        log(f"raw results: {(RESULTS_DIR / results['json_name']).relative_to(REPO)}")
        if args.keep_scratch:
            log(f"scratch dir kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
        log(f"total {time.monotonic() - started:.0f}s")
    return code


if __name__ == "__main__":
    sys.exit(main())
