"""Fixtures of the e2e tier: the production topology in a booted Debian container.

Session-wide: one cached debootstrap rootfs, one wheelhouse, one test CA, and one booted
container set up by running docs/server-guide.md's own shell blocks (see `server`). The
scenario tests then drive the deployer as the `deploy` user and look at the site through nginx
over HTTPS from inside the container.

Without root or systemd-nspawn the tier cannot run: it then skips with the reason AND prints a
warning in the terminal summary; under CI=true it fails instead.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import e2e_machine as m  # noqa: E402

from e2e_machine import CA_IN_CONTAINER, DEV_CHECKOUT, REPORT, SHARE, WHEELHOUSE, figure  # noqa: E402
from guide_setup import adapt_config, run_guide_setup  # noqa: E402



def _ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def cannot_run_reason() -> str | None:
    if not sys.platform.startswith("linux"):
        return "needs Linux"
    if os.geteuid() != 0:
        return "needs root (debootstrap, mount, systemd-nspawn)"
    missing = [t for t in ("systemd-nspawn", "debootstrap", "nsenter", "openssl", "git", "mount", "chroot")
               if not shutil.which(t)]
    if missing:
        return f"missing {', '.join(missing)} (apt-get install systemd-container debootstrap)"
    return None


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.e2e)


def pytest_sessionfinish(session):
    """On an xdist worker: hand the figures to the controller, which prints the summary."""
    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput["e2e_report"] = json.dumps(REPORT)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    report = json.loads(getattr(node, "workeroutput", {}).get("e2e_report", "null") or "null")
    if report:
        REPORT["not_run"] = REPORT["not_run"] or report["not_run"]
        REPORT["figures"].extend(report["figures"])


def pytest_runtest_logreport(report):
    """With xdist the controller sums its own copy of the reports: seconds never travel."""
    if "tests/e2e/" in report.nodeid:
        REPORT["seconds"] = REPORT.get("seconds", 0.0) + report.duration


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed and getattr(item.module, "STORY", False):
        item.module.STORY_BROKEN = item.name
    server = item.funcargs.get("server") if hasattr(item, "funcargs") else None
    if report.failed and server is not None and report.when == "call":
        # What an operator would look at: the service's journal, nginx's error log, history.
        for title, script in [
            ("journalctl -u skinmenu@blue/green (last 60)",
             "journalctl -u skinmenu@blue.service -u skinmenu@green.service -u skinmenu.service --no-pager -n 60"),
            ("the colours", "ls -l /home/deploy/live.sock /home/deploy/current /home/deploy/slots; "
                            "cat /home/deploy/state/standby.json; systemctl --no-pager list-units 'skinmenu*'"),
            ("/var/log/nginx/error.log (last 30)", "tail -n 30 /var/log/nginx/error.log"),
            ("state/history.jsonl", "tail -n 10 /home/deploy/state/history.jsonl"),
        ]:
            try:
                report.sections.append((title, server.c.run(script, check=False, timeout=30).output))
            except Exception as exc:  # noqa: BLE001 - diagnostics must not mask the failure
                report.sections.append((title, f"(could not collect: {exc})"))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    tr = terminalreporter
    if REPORT["not_run"]:
        tr.write_sep("!", "E2E TIER DID NOT RUN", red=True, bold=True)
        tr.write_line(f"WARNING: the production e2e tier (tests/e2e) did not run: {REPORT['not_run']}", red=True, bold=True)
        tr.write_line("         run `make test` as root on a Linux host with systemd-nspawn and debootstrap "
                      "(CI=true makes this a failure)", red=True)
    if REPORT["figures"]:
        tr.write_sep("-", "skinmenu e2e figures")
        for line in REPORT["figures"]:
            tr.write_line(line)
        if REPORT.get("seconds"):
            tr.write_line(f"e2e tier duration (its tests' setup + call + teardown): {REPORT['seconds']:.0f}s")


@pytest.fixture(scope="session")
def e2e_host():
    """Gate: root + nspawn + debootstrap, or skip loudly (fail under CI=true)."""
    reason = cannot_run_reason()
    if reason:
        if _ci():
            pytest.fail(f"the e2e tier must run under CI=true but cannot: {reason}", pytrace=False)
        REPORT["not_run"] = reason
        pytest.skip(f"e2e tier not run: {reason}")


@pytest.fixture(scope="session")
def rootfs(e2e_host) -> Path:
    started = time.monotonic()
    path, built = m.ensure_rootfs()
    figure(f"rootfs ({m.RECIPE['suite']}, recipe {m.recipe_hash()}): "
           f"{'built cold' if built else 'cached'} in {time.monotonic() - started:.1f}s")
    return path


@pytest.fixture(scope="session")
def wheelhouse(rootfs) -> Path:
    python, glibc = m.rootfs_python(rootfs)
    started = time.monotonic()
    path = m.ensure_wheelhouse(python, glibc)
    figure(f"wheelhouse for Python {python} (glibc {glibc}): {len(list(path.glob('*.whl')))} wheels "
           f"in {time.monotonic() - started:.1f}s")
    return path


@pytest.fixture(scope="session")
def share(e2e_host, tmp_path_factory) -> Path:
    """Host dir bound read-only at /srv/e2e: source bundle, test CA, load client."""
    m.reap_stale()
    path = Path(tempfile.mkdtemp(prefix=f"skinmenu-e2e-share-{os.getpid()}-", dir=m.WORK_ROOT))
    path.chmod(0o755)
    tls = m.make_test_ca(path / "tls")
    for p in (path / "tls").iterdir():
        p.chmod(0o644)
    shutil.copy(Path(__file__).parent / "loadclient.py", path / "loadclient.py")
    m.snapshot_source(path / "source.bundle")
    (path / "source.bundle").chmod(0o644)
    yield path
    if os.environ.get("SKINMENU_E2E_KEEP") != "1":
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class Server:
    """The booted server, set up by the guide; helpers speak the operator's language."""

    c: m.Container
    share: Path
    shas: dict = field(default_factory=dict)  # name -> sha, filled by the scenarios
    notes: dict = field(default_factory=dict)  # what one scenario tells the next

    # The deployer, exactly as the guide runs it: `sudo -iu deploy deployer ...`.
    def deployer(self, args: str, timeout: float = 900) -> m.Result:
        result = self.c.run(f"sudo -iu deploy deployer {args}", check=False, timeout=timeout)
        m.log(f"deployer {args}: exit {result.returncode} in {result.seconds:.1f}s")
        return result

    def as_deploy(self, script: str, check: bool = True) -> m.Result:
        return self.c.run(f"sudo -iu deploy sh -c {shlex.quote(script)}", check=check)

    # HTTPS through nginx, from inside the container, like the smoke test (curl --resolve).
    def https(self, path: str, *, http: bool = False, extra: str = "") -> "Response":
        scheme, port = ("http", 80) if http else ("https", 443)
        script = (
            f"curl -sS --max-time 60 -i --http1.1 --resolve {m.DOMAIN}:{port}:127.0.0.1 "
            f"--cacert {CA_IN_CONTAINER} {extra} {shlex.quote(f'{scheme}://{m.DOMAIN}{path}')}"
        )
        result = self.c.run(script, check=False)
        if result.returncode != 0:
            raise AssertionError(f"curl {path} failed: {result.stderr.strip()}")
        return Response.parse(result.stdout)

    def healthz(self) -> dict:
        response = self.https("/healthz")
        assert response.status == 200, response.summary()
        return json.loads(response.body)

    def live_sha(self) -> str:
        return self.c.run("readlink /home/deploy/current").stdout.strip().rsplit("/", 1)[-1]

    # The developer's side: commits pushed to the server's bare repository.
    def commit_and_push(self, message: str, files: dict[str, str], script: str = "") -> str:
        for rel, content in files.items():
            self.c.write(f"{DEV_CHECKOUT}/{rel}", content, owner="deploy:deploy")
        git = "git -c user.name=Developer -c user.email=dev@skinmenu.invalid"
        self.as_deploy(
            f"cd {DEV_CHECKOUT} && {script} {git} add -A && {git} commit -q -m {shlex.quote(message)} "
            f"&& git push -q origin main"
        )
        return self.as_deploy(f"git -C {DEV_CHECKOUT} rev-parse HEAD").stdout.strip()

    def dev_read(self, rel: str) -> str:
        return self.c.read(f"{DEV_CHECKOUT}/{rel}")


@dataclass
class Response:
    status: int
    headers: dict
    body: str

    @classmethod
    def parse(cls, raw: str) -> "Response":
        # curl -i may print several header blocks (e.g. 100 Continue); take the last one.
        # (Text mode has already turned CRLF into LF.)
        raw = raw.replace("\r\n", "\n")
        head, _, body = raw.partition("\n\n")
        while body.startswith("HTTP/"):
            head, _, body = body.partition("\n\n")
        lines = head.split("\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), value.strip())
        return cls(status, headers, body)

    def summary(self) -> str:
        return f"HTTP {self.status} {self.headers} {self.body[:500]!r}"


@pytest.fixture(scope="session")
def server(rootfs, wheelhouse, share) -> Server:
    c = m.Container(rootfs, binds={WHEELHOUSE: wheelhouse, SHARE: share})
    try:
        c.start()
        figure(f"container boot: {c.boot_seconds:.1f}s")
        started = time.monotonic()
        run_guide_setup(c)
        adapt_config(c)
        # The developer's clone of the repository ("the workstation").
        c.run(f"sudo -u deploy git clone -q /home/deploy/apps/skinmenu.git {DEV_CHECKOUT}")
        figure(f"server set up by docs/server-guide.md: {time.monotonic() - started:.1f}s")
        yield Server(c, share)
    finally:
        if os.environ.get("SKINMENU_E2E_KEEP") == "1" and c.workdir:
            m.log(f"SKINMENU_E2E_KEEP=1: container files kept in {c.workdir}")
        c.stop()
