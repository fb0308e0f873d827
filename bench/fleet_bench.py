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
SOCKET_SMOKE_RE = re.compile(r"^\[app\d\] \[\d+/\d+\] smoke test \w+ socket .* ok ")
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
        self.fast_since: float | None = None
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
            if self.fast.is_set() and self.fast_since is None:
                self.fast_since = time.monotonic()

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
        phase: when all servers but one have passed the smoke test on their idle colour's own
        socket (the flip follows the last one within milliseconds). Polling fast any earlier
        would take CPU from the colours booting on this machine's few cores."""
        argv = [str(DEPLOYER), "--config", str(self.configs[n]), *args]
        env = {k: v for k, v in db.clean_env().items() if k != "SSH_AUTH_SOCK"}
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)
        lines: list[tuple[float, str]] = []
        out: list[str] = []
        prepared = 0
        reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)
        reader.start()
        for line in proc.stderr:
            lines.append((time.monotonic(), line.rstrip("\n")))
            if SOCKET_SMOKE_RE.match(line):
                prepared += 1
                if fast is not None and prepared >= max(1, n - 1):
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
        cpu_before = cpu_times()
        try:
            seconds, lines, started = self.orchestrate(n, "deploy", sha, fast=fast)
        finally:
            cpu_after = cpu_times()
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
            "poll_intervals": {s.name: p.interval(p.fast_since or started + seconds) for s, p in zip(self.servers, pollers)},
            "cores_busy": round((cpu_after[0] - cpu_before[0]) / (cpu_after[1] - cpu_before[1]) * (os.cpu_count() or 1), 2),
            "phases": phases(lines, started, seconds),
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


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


PHASES = (  # (name, the stderr line that ends it, which of the matching lines)
    ("connect, check versions, lock", re.compile(r"^\[app\d\] \[1/\d+\] fetch mirror"), "first"),
    ("build on every server", BUILT_RE, "last"),
    ("compare digests, start the barrier", re.compile(r"^\[all\] deploy id"), "first"),
    ("migrations server: verify, migrate", re.compile(r"^\[app1\] \[2/\d+\] migrate"), "first"),
    ("others verify; every idle colour starts", re.compile(r"^\[app\d\] \[\d+/\d+\] start \w+ from"), "last"),
    ("smoke test on each colour's socket", SOCKET_SMOKE_RE, "last"),
    ("relink all, front-door smoke, commit", None, "end"),
)


def phases(lines: list[tuple[float, str]], started: float, seconds: float) -> dict[str, float | None]:
    """How long each phase of the deploy took, from when the orchestrator printed its lines."""
    out, previous = {}, started
    for name, pattern, which in PHASES:
        if pattern is None:
            at = started + seconds
        else:
            times = [when for when, text in lines if pattern.match(text)]
            at = (times[0] if which == "first" else times[-1]) if times else None
        out[name] = round(at - previous, 3) if at is not None else None
        previous = at if at is not None else previous
    return out


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
    summary: dict = {f"deploy_{n}": stats([d["seconds"] for d in ds]) for n, ds in by_n.items()}
    summary["ratio_3_to_1"] = summary["deploy_3"]["median"] / summary["deploy_1"]["median"]
    summary["ratio_2_to_1"] = summary["deploy_2"]["median"] / summary["deploy_1"]["median"]
    for n, ds in by_n.items():
        summary[f"build_max_{n}"] = stats([max(d["build_seconds"].values()) for d in ds if d["build_seconds"]])
        summary[f"cores_busy_{n}"] = stats([d["cores_busy"] for d in ds])
        summary[f"phases_{n}"] = {name: statistics.median(values) if values else None
                                  for name, _, _ in PHASES
                                  for values in [[d["phases"][name] for d in ds if d["phases"][name] is not None]]}
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
    summary["refusals_plain"] = sorted({re.sub(r"[0-9a-f]{12}", "<sha>", s["plain"]["refused"])
                                        for s in ships if s["plain"]["refused"]})
    return summary


def fmt(s: dict | None, unit: str = "s", scale: float = 1.0, digits: int = 2) -> tuple[str, str]:
    if not s:
        return "—", "—"
    return (f"{s['median'] * scale:.{digits}f} {unit}",
            f"{s['min'] * scale:.{digits}f}–{s['max'] * scale:.{digits}f}")


def render_doc(results: dict, summary: dict, command: str) -> str:
    mi = results["machine"]
    runs = results["runs"]
    ships = len(results["ships"])
    ratio = summary["ratio_3_to_1"]
    verdict = (f"meets (≤ {TARGET_RATIO_3_TO_1}×)" if ratio <= TARGET_RATIO_3_TO_1
               else f"**misses** (≤ {TARGET_RATIO_3_TO_1}×)")
    loads = [d["load1"] for d in results["deploys"]] + [s["load1"] for s in results["ships"]]
    rows_deploy = []
    for n in (1, 2, 3):
        median, spread = fmt(summary[f"deploy_{n}"])
        build, _ = fmt(summary[f"build_max_{n}"])
        busy = summary[f"cores_busy_{n}"]["median"]
        ratio_n = "1.00×" if n == 1 else f"{summary[f'ratio_{n}_to_1']:.2f}×"
        target = verdict if n == 3 else "—"
        rows_deploy.append(f"| {n} | {median} | {spread} | {ratio_n} | {build} | {busy:.2f} of {mi['nproc']} | {target} |")
    rows_phase = []
    for name, _, _ in PHASES:
        cells = [summary[f"phases_{n}"][name] for n in (1, 2, 3)]
        rows_phase.append(f"| {name} | " + " | ".join("—" if c is None else f"{c:.2f} s" for c in cells) + " |")
    rows_skew = []
    for n in (2, 3):
        skew, skew_spread = fmt(summary[f"skew_{n}"], "ms", 1000, 1)
        window, _ = fmt(summary[f"flip_window_{n}"], "ms", 1000, 1)
        interval, _ = fmt(summary[f"poll_interval_{n}"], "ms", 1000, 1)
        rows_skew.append(f"| {n} | {skew} | {skew_spread} | {interval} | {window} |")
    mb = db.MB
    build, build_spread = fmt(summary["build_there"])
    plain, plain_spread = fmt(summary["ship_plain"])
    checksum, checksum_spread = fmt(summary["ship_checksum"])
    release_mb = summary["release_bytes"]["median"] / mb
    refusals = "; ".join(f"`{r}`" for r in summary["refusals_plain"]) or "none"
    cpu = " / ".join(f"{x:.3f} s" for x in results["cpu_reference"])
    steps: dict[str, list[float]] = {}
    for s in results["ships"]:
        for name, value in s["build_steps"].items():
            steps.setdefault(name, []).append(value)
    step_text = ", ".join(f"{name} {statistics.median(values):.2f} s" for name, values in steps.items())
    p3 = summary["phases_3"]
    p1 = summary["phases_1"]
    return db.reflow(f"""# Multi-server benchmark

One deploy across 1, 2 and 3 servers, the flip skew between servers, and building a release on
each server against shipping one built elsewhere (issue 11, docs/design.md §13), measured in the
same run on one machine. Generated by `bench/fleet_bench.py`; do not edit by hand, run the
benchmark again.

Command (`make bench` runs it after `bench/deploy_bench.py`):

```
{command}
```

Run on {results['date']} with {runs} measured deploys per server count and {ships} shipped
releases. Raw numbers, with every deploy's timestamped step lines: `bench/results/{results['json_name']}`
(not committed).

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

| servers | median | min–max | vs 1 server | slowest build (median) | cores busy (median) | target |
|---:|---:|---:|---:|---:|---:|---|
{chr(10).join(rows_deploy)}

"Slowest build" is the largest of the servers' own `built <sha> in N s`. "Cores busy" is the
whole machine's CPU time during the command divided by its wall time (from `/proc/stat`, so
other work on the machine counts too).

Where the time goes (medians; each phase ends at the orchestrator's line named in
`PHASES` of the benchmark):

| phase | 1 server | 2 servers | 3 servers |
|---|---:|---:|---:|
{chr(10).join(rows_phase)}

**What the figures say.** All servers of this benchmark share {mi['nproc']} cores, and a deploy
is CPU-bound work on every server: each build runs a uv venv copy and one Django process for the
checks and collectstatic, and each standby activation boots a gunicorn that imports Django and
Wagtail, then renders its first pages cold for the smoke test. With three servers on one
machine those run at the same time on the same cores: the colours' start takes
{p3['others verify; every idle colour starts'] or 0:.2f} s against {p1['others verify; every idle colour starts'] or 0:.2f} s
with one server, and the socket smoke test {p3["smoke test on each colour's socket"] or 0:.2f} s against
{p1["smoke test on each colour's socket"] or 0:.2f} s. The ratio to one server therefore measures this machine's
cores more than the orchestrator. The orchestrator's own costs are the phases that do not grow
with CPU contention: connecting and locking (one SSH connection per server, `deployer --version`,
then the locks one by one in the config's order), comparing the digests, and the migrations
server going first, after which the others start their activation (each a new `deployer`
process). On real servers, each with its own cores, the builds and the colours' boots no longer
compete; this machine cannot measure that, and the target is judged here on shared cores.

## Flip skew with standby

One poller per server asks its front door for `/healthz` during every deploy, a new connection
each time (the front door routes a connection to the live colour when it opens). It polls
slowly until all servers but one have passed the smoke test on their idle colour's socket, then
as fast as it answers. The skew is the latest server's first answer with the new sha minus the
earliest server's. "Flip window" is, per server, the time between its last answer with the old
sha and its first with the new one: how precisely that first answer is placed.

| servers | skew (median) | min–max | time between polls (median) | flip window per server (median) |
|---:|---:|---:|---:|---:|
{chr(10).join(rows_skew)}

The orchestrator says `go` to every prepared server at once, and each relinks `current` and
`live.sock` (two renames) on receipt; the skew is the spread of those messages' arrival over the
SSH connections plus the pollers' own resolution (three polling threads in one Python process,
on cores shared with the servers).

## Build on each server, or build once and ship

The issue asks to compare "build on each in parallel" with "build once and ship with rsync
--link-dest". Both are measured here on one machine, per release: app1 builds the commit
(`deployer release`); app3 builds it too (what the orchestrator does: the time below); app2
receives app1's build with `rsync --link-dest=<app2's live release>` into a temporary directory
renamed into `releases/<sha>`, once with `-a` (the issue's command) and once with `-a
--checksum`, alternating which goes first. After each, app2's `activate --plan --json` says
whether app2 accepts the shipped release (its `RELEASE.json`, `REVISION` and digests verified as
for any release). Local copies: no network is in these times; the literal data is what would
cross it.

| per release | median | min–max | bytes sent (rsync's literal data) | files sent | disk it adds (du, hardlinks once) | app2 accepts it |
|---|---:|---:|---:|---:|---:|---|
| build it there: `deployer release <sha>` | {build} | {build_spread} | — | — | {summary['disk_build']['median'] / mb:.1f} MB | (built there) |
| ship: `rsync -a --link-dest` + rename | {plain} | {plain_spread} | {summary['literal_plain']['median'] / mb:.1f} MB | {summary['files_plain']['median']:.0f} | {summary['disk_plain']['median'] / mb:.1f} MB | {ships - summary['refused_plain']} of {ships} |
| ship: `rsync -a --checksum --link-dest` + rename | {checksum} | {checksum_spread} | {summary['literal_checksum']['median'] / mb:.1f} MB | {summary['files_checksum']['median']:.0f} | {summary['disk_checksum']['median'] / mb:.1f} MB | {ships - summary['refused_checksum']} of {ships} |

A release holds {summary['release_files']['median']:.0f} regular files, {release_mb:.1f} MB. The
build's steps (medians): {step_text}. Refusals of the plain `-a` copies: {refusals}.

**What the figures say.**

- **`rsync -a --link-dest` can ship a wrong file.** Its quick check takes a file as unchanged
  when size and modification time match. `git archive` gives every file the commit's time, so a
  same-size edit in a commit made within the same second as the live one (as the benchmark's
  scripted commits are) is hardlinked from the *old* release: the shipped tree is not the
  commit's. The deployer's content digest of the tree catches it, and app2 refuses the release
  (the table's last column). Shipping needs `--checksum` (every file read on both ends) and the
  digests checked on arrival, which the deployer's `activate` does.
- **Every server has its own uv cache, so nothing of the venv is linked.** The venv's files carry
  the time uv unpacked them into that server's cache, so the quick check sends them all; with
  `--checksum`, rsync finds most of them identical and sends only the
  {summary['files_checksum']['median']:.0f} whose bytes differ, but still writes a full copy
  (the others copied from the live release), because `--link-dest` links only files whose
  times match too. A shipped release therefore adds
  {summary['disk_checksum']['median'] / mb:.0f} MB of disk where a release built there adds
  {summary['disk_build']['median'] / mb:.0f} MB (its venv is a `cp -al` of the previous release's, its
  static files hardlinks of the live release's).
- **Time.** Locally, shipping costs {summary['ship_checksum_to_build']:.2f}× of a build with
  `--checksum` ({summary['ship_plain_to_build']:.2f}× with `-a` alone). Between machines, add the
  literal data over the network. Building on each server keeps every release hardlinked to its
  own cache and previous release, and needs nothing but the commit on each server; shipping
  would pay off where a build is much slower than moving its bytes, e.g. a requirements change
  that compiles wheels, and it needs the same Python at the same path everywhere (the venv's
  interpreter link). The orchestrator builds on each server (docs/design.md §13).
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
        "rsync_version": " ".join(run(["rsync", "--version"]).stdout.split()[:3]),  # "rsync version 3.2.7"
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
            f"build there {summary['build_there']['median']:.2f}s, ship -a {summary['ship_plain']['median']:.2f}s "
            f"({summary['refused_plain']} refused), ship -a --checksum {summary['ship_checksum']['median']:.2f}s")
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
