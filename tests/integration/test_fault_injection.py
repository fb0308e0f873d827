"""kill -9 at seeded random points of every command that changes a deploy (docs/design.md §5-§8).

docs/design.md §6: "at every instant, even under kill -9 at any point: `current` resolves to a complete
release and the site serves it." This test drives the real CLI through one chained story on one
deploy root (builds, plain activate and rollback, activate with a pending migration and
`rollback --migrate`, deploys that build, prune while it deletes) and kills it at more than 50
points. A point is a step line on stderr (`[k/N] name`, or prune's `removing`) plus a seeded
random fraction of that step's duration as measured on this machine by earlier, unkilled runs.
Half of the kills hit the deployer alone (its children, e.g. `migrate` or the service restart,
run on as orphans); the other half hit its whole process group, as a crash of the session would.

After each kill, the operator's checks: `current` is a complete release; after a reboot (every
gunicorn of the root dies, then the configured restart command) the site serves it; the
database is intact and not behind the live code. Then the operator runs the same command again
(for a rollback, only if `status` says it did not finish: a second rollback would go one
release further back), which must succeed and leave no temp dirs, temp links, half-deleted
releases or unusable backups; every history line parses and records what is live, and the schema
holds exactly the live release's migrations. Violations are collected over all points and
reported together with the seed, so one run tells the whole story.

    DEPLOYER_FAULT_SEED=7 .venv/bin/python -m pytest tests/integration/test_fault_injection.py -s
"""

from __future__ import annotations

import json
import os
import random
import re
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
import pytest

# These stories are the restart strategy (docs/design.md §6); standby has tests/integration/test_standby.py.
pytestmark = pytest.mark.strategy("restart")

SEED = int(os.environ.get("DEPLOYER_FAULT_SEED", "20250611"))
MIN_KILLS = 50
STEP_RE = re.compile(r"\[\d+/\d+\] |^removing ", re.MULTILINE)
DRAIN_TIMEOUT = 120
AFTERCARE = ("treatments", "0002_treatment_aftercare")


class Run:
    """One real `deployer` process, its stderr read as it comes, the time each step line appeared."""

    def __init__(self, deployment, args: tuple[str, ...], close_output: tuple[str, float] | None = None) -> None:
        """`close_output` (trigger, delay): its stderr reader goes away that long after that step line."""
        env = {k: v for k, v in os.environ.items() if k not in ("DEPLOYER_CONFIG", "DEPLOYER_DEBUG")}
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "deployer", "--config", str(deployment.config_file), *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=env, start_new_session=True,  # its own process group: a "session crash" kills all of it
        )
        self.text = ""
        self.marks: dict[str, float] = {}
        self.ended: float | None = None
        self.close_output = close_output
        self.output_closed_at: float | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        fd = self.proc.stderr.fileno()
        while True:
            if self._output_goes_now():
                self.output_closed_at = time.monotonic()
                self.proc.stderr.close()  # as a dropped SSH session or a closed terminal: writes fail
                break
            readable, _, _ = select.select([fd], [], [], 0.002 if self.close_output else 1.0)
            if not readable:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            now = time.monotonic()
            self.text += chunk.decode(errors="replace")
            for match in STEP_RE.finditer(self.text):
                self.marks.setdefault(match.group(0).strip(), now)
        self.ended = time.monotonic()

    def _output_goes_now(self) -> bool:
        if self.close_output is None:
            return False
        trigger, delay = self.close_output
        return trigger in self.marks and time.monotonic() >= self.marks[trigger] + delay

    def kill_at(self, trigger: str, delay: float, whole_group: bool) -> bool:
        """SIGKILL `delay` seconds after `trigger` showed up; False if the run ended first."""
        while trigger not in self.marks:
            if self.proc.poll() is not None:
                self.wait()
                return False
            time.sleep(0.002)
        deadline = self.marks[trigger] + delay
        while time.monotonic() < deadline and self.proc.poll() is None:
            time.sleep(min(0.002, max(0.0, deadline - time.monotonic())))
        if self.proc.poll() is None:
            if whole_group:
                os.killpg(self.proc.pid, signal.SIGKILL)
            else:
                self.proc.send_signal(signal.SIGKILL)
        self.wait()
        return self.proc.returncode == -signal.SIGKILL

    def wait(self) -> int:
        code = self.proc.wait(timeout=600)
        self._reader.join(timeout=30)
        return code

    def spans(self) -> dict[str, float]:
        """How long each step took: from its line to the next step line (or the end of output)."""
        order = sorted(self.marks.items(), key=lambda item: item[1])
        ends = [t for _, t in order[1:]] + [self.ended or time.monotonic()]
        return {name: end - start for (name, start), end in zip(order, ends)}

    def step_running(self) -> str:
        lines = [line for line in self.text.splitlines() if line.startswith(("[", "removing "))]
        if not lines:
            return "(before the first step)"
        if lines[-1].startswith("removing "):
            return "deleting (prune lists every release it removes before the first deletion)"
        name = re.sub(r" ?\.{2,}.*$| +(ok|FAILED) [\d.]+s$", "", lines[-1]).strip()
        return f"{name} (just done)" if re.search(r" ok [\d.]+s$", lines[-1]) else name

    def last_line(self) -> str:
        lines = self.text.strip().splitlines()
        return lines[-1] if lines else "(no output)"


def process_group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def wait_for_orphans(pgid: int) -> list[str]:
    """The killed deployer's children (a restart, a migrate) run on by themselves: let them end."""
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while process_group_members(pgid):
        if time.monotonic() > deadline:
            left = process_group_members(pgid)
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            return [f"orphaned children {left} were still running {DRAIN_TIMEOUT}s after the kill"]
        time.sleep(0.05)
    return []


# --- what the operator checks -------------------------------------------------------------------

def release_problems(deploy_to: Path, sha: str) -> list[str]:
    path = deploy_to / "releases" / sha
    try:
        meta = json.loads((path / "RELEASE.json").read_text())
    except (OSError, ValueError) as exc:
        return [f"releases/{sha[:12]}: RELEASE.json unreadable ({type(exc).__name__})"]
    issues = []
    if meta.get("sha") != sha:
        issues.append(f"releases/{sha[:12]}: RELEASE.json names {meta.get('sha')!r}")
    if not (path / "venv" / "bin" / "python").exists():
        issues.append(f"releases/{sha[:12]}: venv/bin/python is missing")
    if not (path / "staticfiles" / "staticfiles.json").is_file():
        issues.append(f"releases/{sha[:12]}: staticfiles/staticfiles.json is missing")
    return issues


def graph_of(deploy_to: Path, sha: str) -> set[tuple[str, str]]:
    meta = json.loads((deploy_to / "releases" / sha / "RELEASE.json").read_text())
    return {tuple(node) for node in meta["migrations"]["nodes"]}


def applied(db: Path) -> set[tuple[str, str]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        return {(app, name) for app, name in conn.execute("SELECT app, name FROM django_migrations")}


def integrity(db: Path) -> str:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def names(migrations) -> str:
    return ", ".join(f"{app}.{name}" for app, name in sorted(migrations))


def history_lines(deploy_to: Path) -> list[str]:
    path = deploy_to / "state" / "history.jsonl"
    return path.read_text().split("\n") if path.exists() else []


def unparsable(lines: list[str]) -> list[int]:
    bad = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                json.loads(line)
            except ValueError:
                bad.append(number)
    return bad


def last_recorded_live(deploy_to: Path) -> str | None:
    live = None
    for line in history_lines(deploy_to):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("result") == "ok":
            live = entry.get("to")
    return live


def leftovers(deploy_to: Path) -> list[str]:
    found = [f"left {p.relative_to(deploy_to)}" for p in sorted((deploy_to / "releases").glob(".tmp-*"))]
    found += [f"left temp link {p.name}" for p in sorted(deploy_to.glob(".current-*"))]
    for path in sorted((deploy_to / "releases").iterdir()):
        if re.fullmatch(r"[0-9a-f]{40}", path.name):
            found += [f"incomplete release dir left behind: {issue}" for issue in release_problems(deploy_to, path.name)]
    for backup in sorted((deploy_to / "state" / "backups").glob("*.sqlite3")):
        why = backup_problem(backup)
        if why:
            found.append(f"unusable database backup left: {backup.name} ({why})")
    return found


def backup_problem(backup: Path) -> str | None:
    """Why a file in state/backups could not restore the site (None: it could)."""
    size = backup.stat().st_size
    journal = [p.name[len(backup.name):] for p in backup.parent.glob(backup.name + "-*")]
    try:
        verdict = integrity(backup)
        if verdict != "ok":
            return f"{size} bytes, integrity_check: {verdict}"
        if not applied(backup):
            return f"{size} bytes, no applied migrations"
    except sqlite3.Error as exc:
        return f"{size} bytes{', with ' + '/'.join(journal) if journal else ''}: {exc}"
    return None


@dataclass
class Point:
    number: int
    command: str
    whole_group: bool
    trigger: str
    delay: float
    killed: bool = False
    step: str = ""
    after: float = 0.0
    seconds: float = 0.0
    next: str = "the same command again"
    problems: list[str] = field(default_factory=list)

    def describe(self) -> str:
        who = "its process group" if self.whole_group else "the deployer alone"
        if not self.killed:
            return f"#{self.number} `deployer {self.command}` ran to the end before the kill (aimed {self.delay:.2f}s into {self.trigger})"
        then = "" if self.next == "the same command again" else f"; then {self.next}"
        return (f"#{self.number} `deployer {self.command}` killed ({who}) {self.delay:.2f}s after '{self.trigger}', "
                f"{self.after:.2f}s into the run, during '{self.step}'{then}")

    def line(self) -> str:
        return f"{self.describe()}  [{self.seconds:.1f}s{'; ' + str(len(self.problems)) + ' problem(s)' if self.problems else ''}]"


class FaultStory:
    """Drives the chained scenarios on one deploy root and collects what broke at each kill."""

    def __init__(self, deployment) -> None:
        self.d = deployment
        self.rng = random.Random(SEED)
        self.decks: dict[str, list[str]] = {}
        self.typical: dict[tuple[str, str], float] = {}
        self.points: list[Point] = []

    # -- choosing points
    def learn(self, kind: str, run: Run) -> None:
        # The longest seen: a re-run may skip a step's work (nothing left to migrate), and a
        # kill aimed at a fraction of that would only ever hit the step's first instant.
        for name, seconds in run.spans().items():
            for key in ((kind, name), ("any", name)):
                self.typical[key] = max(seconds, self.typical.get(key, 0.0))

    def choose(self, kind: str, triggers: list[str]) -> tuple[str, float, bool]:
        deck = self.decks.setdefault(kind, [])
        if not deck:
            deck.extend(self.rng.sample(triggers, len(triggers)))
        trigger = deck.pop()
        typical = self.typical.get((kind, trigger), self.typical.get(("any", trigger), 1.0))
        return trigger, self.rng.random() * typical, self.rng.random() < 0.5

    # -- running commands
    def run(self, kind: str, *args: str) -> Run:
        run = Run(self.d, args)
        if run.wait() == 0:
            self.learn(kind, run)
        return run

    def ok(self, kind: str, *args: str) -> None:
        run = self.run(kind, *args)
        assert run.proc.returncode == 0, f"setup `deployer {' '.join(args)}` failed:\n{run.text}"

    def strike(self, kind: str, triggers: list[str], args: tuple[str, ...], *, target: str | None = None,
               built: str | None = None, then: tuple[str, ...] | None = None) -> Point:
        """Kill `deployer args` at a seeded point, check the site, run it again, check again.
        `target`: the release it makes live (None: current must not move); `built`: the one it builds;
        `then`: what the operator runs next instead of the same command (when `status` says unfinished)."""
        d = self.d
        before = d.current
        trigger, delay, whole_group = self.choose(kind, triggers)
        point = Point(len(self.points) + 1, " ".join(a[:12] if re.fullmatch(r"[0-9a-f]{40}", a) else a for a in args),
                      whole_group, trigger, delay)
        self.points.append(point)
        run = Run(d, args)
        point.killed = run.kill_at(trigger, delay, whole_group)
        point.step, point.after = run.step_running(), (time.monotonic() - run.started)
        if not point.killed:
            self.learn(kind, run)
        problems = point.problems
        problems += wait_for_orphans(run.proc.pid)

        allowed = {before, target} - {None}
        problems += self.live_release_checks(before, allowed)

        if args[0] == "rollback" and self.rollback_finished(target, problems):
            point.next = "status (the rollback had finished)"
        else:
            next_args = then or args
            if then:
                point.next = f"`deployer {' '.join(a[:12] for a in then)}`"
            again = self.run(kind, *next_args)
            if again.proc.returncode != 0:
                problems.append(f"running `deployer {' '.join(a[:12] for a in next_args)}` next exited "
                                f"{again.proc.returncode}: {again.last_line()}")
        expected = target or before
        if d.current != expected:
            problems.append(f"after the re-run current is {str(d.current)[:12]}, expected {expected[:12]}")
        if built:
            problems += [f"after the re-run: {issue}" for issue in release_problems(d.deploy_to, built)]
        problems += self.settled_checks()
        if problems:
            self.repair(expected, problems)
        point.seconds = time.monotonic() - run.started
        print(point.line(), flush=True)
        return point

    def rollback_finished(self, target: str, problems: list[str]) -> bool:
        """Rollback is not idempotent (a second one goes one release further back), so the operator
        first asks `status` whether the killed one got to its end; only if not, runs it again."""
        result = self.d.deployer("status", "--json")
        if result.returncode != 0:
            problems.append(f"`deployer status --json` exited {result.returncode}: {result.stderr.strip()[-200:]}")
            return False
        status = json.loads(result.stdout)
        return status["current"] == target and status["activation_finished"] is True

    def live_release_checks(self, before: str | None, allowed: set[str]) -> list[str]:
        d, problems = self.d, []
        live = d.current
        if live is None:
            if before:
                problems.append(f"current is missing (it pointed at {before[:12]} before the run)")
            return problems
        if live not in allowed:
            problems.append(f"current points at {live[:12]}, neither the release live before nor the target")
        issues = release_problems(d.deploy_to, live)
        problems += [f"current is not complete: {issue}" for issue in issues]
        lines = history_lines(d.deploy_to)
        bad = unparsable(lines)
        torn_tail = bad == [len(lines)]  # the last fragment, with no newline after it
        if bad and not torn_tail:
            problems.append(f"history.jsonl has unparsable lines {bad} besides a torn last line")
        problems += self.database_checks(live, exact=False)
        if issues:
            return problems
        restart = self.reboot()
        if restart.returncode != 0:
            problems.append(f"the service does not start from current after a reboot: {restart.stderr.strip()[-300:]}")
            return problems
        try:
            served = d.healthz()
        except OSError as exc:
            problems.append(f"/healthz does not answer after a reboot: {exc}")
            return problems
        if served.get("release") != live:
            problems.append(f"after a reboot the site serves {served.get('release')!r}, current is {live[:12]}")
        return problems

    def reboot(self) -> subprocess.CompletedProcess:
        """What a reboot does to the service: every gunicorn of this deploy root dies, then the
        service starts from `current`. (A group kill can catch scripts/local-service half-way
        through a restart, leaving a gunicorn its pid file does not name; systemd would not.)"""
        releases = os.path.realpath(self.d.deploy_to / "releases") + os.sep
        killed = []
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and os.readlink(entry / "cwd").startswith(releases):
                    os.kill(int(entry.name), signal.SIGKILL)
                    killed.append(int(entry.name))
            except (OSError, ProcessLookupError):
                continue
        # As after a real reboot, they are gone (and their listening socket closed) before the
        # service starts: otherwise the start can see the dying one still listening and call it ready.
        deadline = time.monotonic() + 30
        while any(running(pid) for pid in killed) and time.monotonic() < deadline:
            time.sleep(0.02)
        return subprocess.run(self.d.service_command("restart").split(), capture_output=True, text=True, timeout=180)

    def database_checks(self, live: str, exact: bool) -> list[str]:
        db, problems = self.d.database, []
        verdict = integrity(db)
        if verdict != "ok":
            problems.append(f"PRAGMA integrity_check says {verdict!r}")
        done, graph = applied(db), graph_of(self.d.deploy_to, live)
        missing = graph - done
        if missing:
            problems.append(f"the live release {live[:12]} runs on a database without its migrations {names(missing)}")
        if exact and done - graph:  # no point uses `rollback --force`, which would allow this
            problems.append(f"the database has migrations the live release {live[:12]} does not know: {names(done - graph)}")
        return problems

    def settled_checks(self) -> list[str]:
        d, problems = self.d, []
        live = d.current
        if live is None:
            return ["current is missing after the re-run"]
        problems += [f"after the re-run: {issue}" for issue in release_problems(d.deploy_to, live)]
        try:
            served = d.healthz().get("release")
        except OSError as exc:
            served = f"nothing ({exc})"
        if served != live:
            problems.append(f"after the re-run the site serves {served}, current is {live[:12]}")
        problems += [f"after the re-run: {item}" for item in leftovers(d.deploy_to)]
        bad = unparsable(history_lines(d.deploy_to))
        if bad:
            problems.append(f"after the re-run history.jsonl has unparsable lines {bad}")
        recorded = last_recorded_live(d.deploy_to)
        if recorded != live:
            problems.append(f"after the re-run history says {str(recorded)[:12]} is live, current is {live[:12]}")
        problems += [f"after the re-run: {issue}" for issue in self.database_checks(live, exact=True)]
        return problems

    def repair(self, sha: str, problems: list[str]) -> None:
        """After a violation, clean up by hand and put the story back on its track, so that the
        next points report their own problems, not this one's."""
        deploy_to = self.d.deploy_to
        for path in [*(deploy_to / "releases").glob(".tmp-*"), *(deploy_to / "releases").glob("*")]:
            if path.name.startswith(".tmp-") or path.name != self.d.current and release_problems(deploy_to, path.name):
                shutil.rmtree(path, ignore_errors=True)
        for link in deploy_to.glob(".current-*"):
            link.unlink()
        for backup in (deploy_to / "state" / "backups").glob("*.sqlite3"):
            if any("unusable database backup" in p and backup.name in p for p in problems):
                backup.unlink()
        if AFTERCARE in applied(self.d.database) and AFTERCARE not in graph_of(deploy_to, sha):
            self.run("recover", "rollback", "--to", sha, "--migrate")
        if self.d.current != sha or last_recorded_live(deploy_to) != sha:
            self.run("recover", "activate", sha)

    def report(self) -> str:
        kills = sum(p.killed for p in self.points)
        lines = [f"DEPLOYER_FAULT_SEED={SEED}: {len(self.points)} points, {kills} kills, "
                 f"{sum(bool(p.problems) for p in self.points)} with violations (the same seed replays the same "
                 "points; where a kill lands within a step still depends on this machine's timing)"]
        broken = [p for p in self.points if p.problems]
        for point in broken:
            lines.append(point.describe())
            lines += [f"    - {problem}" for problem in point.problems]
        return "\n".join(lines)


def steps(total: int) -> list[str]:
    return [f"[{k}/{total}]" for k in range(1, total + 1)]


RELEASE_STEPS = steps(8)
ACTIVATE_STEPS = steps(6)
ROLLBACK_MIGRATE_STEPS = steps(7)  # `unapply migrations` runs after the switch
PRUNE_DELETING = ["removing"]
REFS = ("base", "visible", "second", "third", "migration")
UNAPPLY_STEP = ROLLBACK_MIGRATE_STEPS[3]  # [4/7] unapply migrations
UNAPPLY_ROUNDS = 2
PLAIN_ROUNDS = 4
MIGRATION_ROUNDS = 6
PRUNE_ROUNDS = 4


def test_kill_9_at_seeded_points_never_leaves_the_site_broken(deployment, source_repo):
    print(f"\nDEPLOYER_FAULT_SEED={SEED}", flush=True)
    story = FaultStory(deployment)
    sha = source_repo.sha
    base, visible, migration, second = (sha(ref) for ref in ("base", "visible", "migration", "second"))
    started = time.monotonic()

    story.ok("deploy", "deploy", "base")

    # Builds: the live site must not notice a build killed anywhere.
    for ref in ("visible", "second", "third", "migration"):
        story.strike("release", RELEASE_STEPS, ("release", ref), built=sha(ref))

    # Plain activate and rollback, alternating base <-> second.
    for _ in range(PLAIN_ROUNDS):
        story.strike("activate", ACTIVATE_STEPS, ("activate", second), target=second)
        story.strike("rollback", ACTIVATE_STEPS, ("rollback",), target=base)

    # A pending migration: activate `migration` from `visible`, then `rollback --migrate`.
    story.strike("activate", ACTIVATE_STEPS, ("activate", visible), target=visible)
    story.ok("activate-migrate", "activate", migration)  # unkilled: how long migrating takes here
    story.ok("rollback-migrate", "rollback", "--migrate")
    for _ in range(MIGRATION_ROUNDS):
        story.strike("activate-migrate", ACTIVATE_STEPS, ("activate", migration), target=migration)
        story.strike("rollback-migrate", ROLLBACK_MIGRATE_STEPS, ("rollback", "--migrate"), target=visible)
    # Killed in `unapply migrations` (after the switch, before the restart), the operator then
    # activates the release `current` names instead of repeating the rollback: it finishes it.
    for _ in range(UNAPPLY_ROUNDS):
        story.strike("activate-migrate", ACTIVATE_STEPS, ("activate", migration), target=migration)
        story.strike("unapply", [UNAPPLY_STEP], ("rollback", "--migrate"), target=visible, then=("activate", visible))

    # Prune while it deletes, then rebuild what it deleted: a deploy and a release, each killed.
    for _ in range(PRUNE_ROUNDS):
        before = set(deployment.releases)
        story.strike("prune", PRUNE_DELETING, ("prune", "--keep", "1"))
        gone = [ref for ref in REFS if sha(ref) in before - deployment.releases]
        deployable = [ref for ref in gone if ref != "migration"]
        if deployable:
            story.strike("deploy", RELEASE_STEPS + ACTIVATE_STEPS, ("deploy", deployable[0]),
                         target=sha(deployable[0]), built=sha(deployable[0]))
        for ref in [ref for ref in gone if ref not in deployable[:1]]:
            story.strike("release", RELEASE_STEPS, ("release", ref), built=sha(ref))

    # Points where the run ended before its kill do not count: top up with activate/rollback.
    while sum(p.killed for p in story.points) < MIN_KILLS and len(story.points) < MIN_KILLS + 30:
        live = deployment.current
        other = next(sha(ref) for ref in ("second", "base", "visible") if sha(ref) != live)
        story.strike("activate", ACTIVATE_STEPS, ("activate", other), target=other)
        story.strike("rollback", ACTIVATE_STEPS, ("rollback",), target=live)

    summary = story.report()
    print(f"{summary}\nthe fault story took {time.monotonic() - started:.0f}s", flush=True)
    assert not any(p.problems for p in story.points), summary
    assert sum(p.killed for p in story.points) >= MIN_KILLS, summary


def test_stderr_closed_at_seeded_points_never_changes_what_a_command_does(deployment, source_repo):
    """The output's reader goes away (an SSH session drops, a terminal closes, `| head` exits)
    at seeded points of activate, rollback and rollback --migrate: each command carries on to
    the outcome it has with its output read. With a failing smoke test, that outcome is the
    previous release back, serving, and history saying so (docs/design.md §3)."""
    print(f"\nDEPLOYER_FAULT_SEED={SEED}", flush=True)
    story = FaultStory(deployment)
    sha = source_repo.sha
    visible, migration, second = (sha(ref) for ref in ("visible", "migration", "second"))
    story.ok("deploy", "deploy", "base")
    for ref in ("second", "visible", "migration"):
        deployment.release(ref)
    # Unread runs first: how long each step takes here, for the seeded points.
    story.ok("activate", "activate", second)
    story.ok("rollback", "rollback")
    story.ok("activate", "activate", visible)
    story.ok("activate-migrate", "activate", migration)
    story.ok("rollback-migrate", "rollback", "--migrate")
    violations: list[str] = []

    def lose_output(kind: str, args: tuple[str, ...], triggers: list[str], exit_code: int, live: str) -> None:
        trigger, delay, _ = story.choose(kind, triggers)
        run = Run(deployment, args, close_output=(trigger, delay))
        code = run.wait()
        where = f"`deployer {' '.join(a[:12] for a in args)}` with stderr closed {delay:.2f}s after '{trigger}'"
        problems = [] if run.output_closed_at else ["(it ended before its output was closed)"]
        if code != exit_code:
            problems.append(f"exited {code}, expected {exit_code}")
        if deployment.current != live:
            problems.append(f"current is {str(deployment.current)[:12]}, expected {live[:12]}")
        served = deployment.healthz().get("release")
        if served != live:
            problems.append(f"the site serves {str(served)[:12]}, expected {live[:12]}")
        if last_recorded_live(deployment.deploy_to) != live:
            problems.append(f"history says {str(last_recorded_live(deployment.deploy_to))[:12]} is live")
        problems += leftovers(deployment.deploy_to) + story.database_checks(live, exact=True)
        print(f"{where}: {'; '.join(problems) or 'held'}", flush=True)
        if [p for p in problems if not p.startswith("(")]:
            violations.append(f"{where}: {'; '.join(problems)}")

    for _ in range(3):
        lose_output("activate", ("activate", second), ACTIVATE_STEPS, 0, second)
        lose_output("rollback", ("rollback",), ACTIVATE_STEPS, 0, visible)
    lose_output("activate-migrate", ("activate", migration), ACTIVATE_STEPS, 0, migration)
    lose_output("rollback-migrate", ("rollback", "--migrate"), ROLLBACK_MIGRATE_STEPS, 0, visible)
    deployment.write_config(smoke={"url": f"http://127.0.0.1:{deployment.port}/nowhere",
                                   "check_static": False, "timeout": 2})
    for _ in range(3):  # every check 404s: the put-back runs with nobody reading
        lose_output("activate-failing", ("activate", second), ACTIVATE_STEPS, 1, visible)

    assert not violations, "\n".join(violations)


def unapply_running(pgid: int) -> bool:
    """The `manage.py migrate treatments …` of the `unapply migrations` step is running."""
    for pid in process_group_members(pgid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"manage.py" in argv and b"migrate" in argv and b"treatments" in argv:
            return True
    return False


def kill_rollback_migrate_while_it_unapplies(deployment) -> None:
    """kill -9 to the whole `deployer rollback --migrate` (its migrate child with it) once the
    unapply has started: `current` already names the older release, the database still holds
    the newer one's migration (the killed migrate never committed), history still says the newer
    release is live, and the newer release's gunicorn still serves."""
    run = Run(deployment, ("rollback", "--migrate"))
    while not unapply_running(run.proc.pid):
        assert run.proc.poll() is None, f"the rollback ended before its unapply step:\n{run.text}"
        time.sleep(0.005)
    os.killpg(run.proc.pid, signal.SIGKILL)
    run.wait()
    assert not wait_for_orphans(run.proc.pid)
    assert "[4/7] unapply migrations" in run.text, run.text


@pytest.mark.parametrize("record", ["kept", "lost"])
def test_a_rollback_migrate_killed_while_unapplying_is_finished_or_refused_truthfully(deployment, source_repo, record):
    """The operator's story after the kill: `status` names the command that finishes the run;
    `activate <older>` finishes the rollback with the authorisation the killed run recorded
    (state/underway.json). Without that record (`lost`: a deployer from before it, or a hand
    clean-up) activate refuses, changes nothing, says where `current` really points and names the
    command that does finish it. Either way the end is one release live, serving, and recorded."""
    visible, migration = source_repo.sha("visible"), source_repo.sha("migration")
    deployment.ok("deploy", "visible")
    deployment.ok("deploy", "migration")
    entries = deployment.history()

    kill_rollback_migrate_while_it_unapplies(deployment)

    assert deployment.current == visible
    assert AFTERCARE in applied(deployment.database)
    assert deployment.history() == entries
    if record == "lost":
        (deployment.deploy_to / "state" / "underway.json").unlink()
    status = json.loads(deployment.ok("status", "--json").stdout)
    assert (status["current"], status["activation_finished"]) == (visible, False)
    assert status["finish_with"] == f"deployer activate {visible[:12]}"
    said = deployment.ok("status").stdout
    assert f"run `deployer activate {visible[:12]}` to finish it" in said
    assert ("`deployer rollback --migrate` was killed after its switch" in said) == (record == "kept")

    result = deployment.deployer("activate", visible)

    if record == "lost":
        assert result.returncode == 1, result.stderr
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("deployer: error:") and "Traceback" not in result.stderr
        assert f"it still points at {visible[:12]}, where a killed run left it" in last, last
        assert f"{migration[:12]} is still live" not in last
        assert f"`deployer rollback --to {visible[:12]} --migrate`" in last, last
        assert deployment.current == visible and deployment.history() == entries
        assert AFTERCARE in applied(deployment.database)
        result = deployment.deployer("rollback", "--to", visible[:12], "--migrate")
    assert result.returncode == 0, result.stderr
    assert "never finished; finishing it" in result.stderr
    assert deployment.current == visible
    assert deployment.healthz()["release"] == visible
    assert AFTERCARE not in applied(deployment.database)
    last = deployment.history()[-1]
    assert (last["action"], last["from"], last["to"], last["result"]) == ("rollback", migration, visible, "ok")
    status = json.loads(deployment.ok("status", "--json").stdout)
    assert status["activation_finished"] is True and status["finish_with"] is None
    assert status["health"]["serves_current"] is True
    assert not (deployment.deploy_to / "state" / "underway.json").exists()
