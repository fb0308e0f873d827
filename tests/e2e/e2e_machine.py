"""The e2e tier's machinery: a debootstrapped Debian rootfs (cached), booted with systemd-nspawn.

Nothing here is specific to pytest; conftest.py wires it into fixtures.

- `ensure_rootfs()` builds the rootfs once per recipe (cached under CACHE_ROOT, keyed by a hash of
  the recipe; built in a temp dir and renamed, so a killed build never leaves a half cache).
- `Container` boots a throw-away overlay of it (`systemd-nspawn -b --private-network`), runs
  commands inside with `nsenter` on the container's PID 1 (machinectl needs a host systemd),
  and always tears it down.
- `ensure_wheelhouse()` downloads the Python wheels the container needs (it has no network),
  cached by a hash of what it contains.
- `make_test_ca()` makes a CA and a certificate for the site's domain with openssl.
"""

from __future__ import annotations

import configparser
import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE_ROOT = Path(os.environ.get("SKINMENU_E2E_CACHE", "/var/cache/skinmenu-e2e"))
WORK_ROOT = Path(os.environ.get("SKINMENU_E2E_WORKDIR", "/var/tmp"))
MIRROR = os.environ.get("SKINMENU_E2E_MIRROR", "http://deb.debian.org/debian")
DOMAIN = "skinmenu.example.com"

# Inside the container.
SHARE = "/srv/e2e"  # the session's share dir (bundle, CA, load client), bound read-only
WHEELHOUSE = "/srv/wheelhouse"
CA_IN_CONTAINER = "/usr/local/share/ca-certificates/skinmenu-e2e-ca.crt"
DEV_CHECKOUT = "/home/deploy/dev/skinmenu"  # the developer's clone ("the workstation")

# Measured figures and the did-not-run reason, printed in the terminal summary by conftest.py.
REPORT: dict = {"not_run": None, "figures": [], "seconds": 0.0}


def figure(line: str) -> None:
    """A measured figure: printed in the terminal summary (and on stderr right away)."""
    REPORT["figures"].append(line)
    print(f"[e2e] {line}", file=sys.stderr, flush=True)

# The rootfs recipe. Its hash names the cache directory: change anything here and the next run
# builds a new rootfs. Debian 13 "trixie": its Python (3.13) satisfies the pinned requirements
# (some need >= 3.12, so bookworm's 3.11 cannot install them); the server guide supports Ubuntu
# 24.04 (3.12) and Debian 13. The package list is the guide's section 2 (minus certbot: a test
# CA stands in for Let's Encrypt) plus what a booted minimal system needs.
RECIPE = {
    "version": 1,
    "suite": "trixie",
    "variant": "minbase",
    "include": [
        "systemd", "systemd-sysv", "dbus",
        "nginx", "sudo", "git", "curl", "python3", "python3-venv", "pipx",
        "ca-certificates", "openssl", "iproute2", "procps",
        # The multi-server tier (test_e2e_fleet.py): app servers reached over SSH, one PostgreSQL
        # server. Off at boot; that tier turns them on where they belong.
        "openssh-server", "postgresql",
    ],
    # Run in the fresh rootfs (chroot) before it is cached.
    "post": [
        "apt-get clean",
        "rm -rf /var/lib/apt/lists/*",
        "echo skinmenu-e2e > /etc/hostname",
        r"printf '127.0.0.1\tlocalhost\n127.0.1.1\tskinmenu-e2e\n::1\tlocalhost ip6-localhost ip6-loopback\n' > /etc/hosts",
        # No getty on the (absent) console.
        "systemctl mask console-getty.service getty@tty1.service",
        "systemctl disable ssh.service postgresql.service",
        "rm -f /etc/ssh/ssh_host_*",  # every container makes its own host keys (ssh-keygen -A)
    ],
}
GUIDE_PACKAGES_NOT_IN_ROOTFS = {"certbot"}  # replaced by the test CA


def log(message: str) -> None:
    print(f"[e2e {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def recipe_hash() -> str:
    return hashlib.sha256(json.dumps(RECIPE, sort_keys=True).encode()).hexdigest()[:16]


@contextlib.contextmanager
def _flock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_rootfs() -> tuple[Path, bool]:
    """The cached rootfs for RECIPE, built if missing. Returns (path, was_built_now)."""
    final = CACHE_ROOT / f"rootfs-{RECIPE['suite']}-{recipe_hash()}"
    if (final / ".skinmenu-e2e-complete").exists():
        return final, False
    with _flock(CACHE_ROOT / ".rootfs.lock"):
        if (final / ".skinmenu-e2e-complete").exists():
            return final, False
        for stale in CACHE_ROOT.glob(".tmp-rootfs-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = CACHE_ROOT / f".tmp-rootfs-{recipe_hash()}-{os.getpid()}"
        log(f"building the {RECIPE['suite']} rootfs with debootstrap (cold cache) into {final}")
        started = time.monotonic()
        cmd = [
            "debootstrap", f"--variant={RECIPE['variant']}", f"--include={','.join(RECIPE['include'])}",
            RECIPE["suite"], str(tmp), MIRROR,
        ]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RuntimeError(f"debootstrap failed ({proc.returncode}):\n" + "\n".join(proc.stdout.splitlines()[-30:]))
        for command in RECIPE["post"]:
            subprocess.run(["chroot", str(tmp), "/bin/sh", "-c", command], check=True,
                           env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"})
        (tmp / ".skinmenu-e2e-recipe.json").write_text(json.dumps(RECIPE, indent=2, sort_keys=True))
        (tmp / ".skinmenu-e2e-complete").write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))
        if final.exists():  # an incomplete leftover with the final name: never trust it
            shutil.rmtree(final)
        tmp.rename(final)
        log(f"rootfs built in {time.monotonic() - started:.0f}s")
        # Older recipes' caches are of no further use.
        for old in CACHE_ROOT.glob(f"rootfs-{RECIPE['suite']}-*"):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
        return final, True


def rootfs_python(rootfs: Path) -> tuple[str, str]:
    """(python version 'X.Y', glibc version 'X.Y') of the rootfs."""
    versions = sorted(
        (p.name.removeprefix("python") for p in (rootfs / "usr/bin").glob("python3.*")
         if re.fullmatch(r"python3\.\d+", p.name)),
        key=lambda v: int(v.split(".")[1]),
    )
    if not versions:
        raise RuntimeError(f"no python3.X in {rootfs}/usr/bin")
    libc = next((rootfs / "usr/lib/x86_64-linux-gnu").glob("libc.so.6"), None)
    glibc = "2.17"
    if libc is not None:
        match = re.search(rb"GNU C Library[^\n]*?release version (\d+\.\d+)", libc.read_bytes())
        if match:
            glibc = match.group(1).decode()
    return versions[-1], glibc


def deployer_requirements() -> list[str]:
    """install_requires of setup.cfg: the deployer's own dependencies."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    raw = cfg.get("options", "install_requires", fallback="")
    return [line.split("#")[0].strip() for line in raw.splitlines() if line.split("#")[0].strip()]


def ensure_wheelhouse(python_version: str, glibc: str) -> Path:
    """Wheels for the container's Python: app/requirements.txt (the exact pinned files, so their
    hashes match) + the deployer's dependencies + pip/setuptools (pipx and the deployer's build)."""
    requirements = (REPO / "app/requirements.txt").read_bytes()
    extra = deployer_requirements() + ["pip", "setuptools>=68"]
    key = hashlib.sha256(requirements + json.dumps([python_version, glibc, extra]).encode()).hexdigest()[:16]
    final = CACHE_ROOT / f"wheelhouse-py{python_version}-{key}"
    if (final / ".complete").exists():
        return final
    with _flock(CACHE_ROOT / ".wheelhouse.lock"):
        if (final / ".complete").exists():
            return final
        tmp = CACHE_ROOT / f".tmp-wheelhouse-{key}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        major, minor = (int(x) for x in glibc.split("."))
        platforms = [f"manylinux_{major}_{m}_x86_64" for m in range(minor, 4, -1)]
        platforms += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64", "any"]
        nodot = python_version.replace(".", "")
        common = [
            sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
            "--only-binary=:all:", "--python-version", python_version, "--implementation", "cp",
            "--abi", f"cp{nodot}", "--abi", "abi3", "--abi", "none",
            *[arg for p in platforms for arg in ("--platform", p)],
            "--dest", str(tmp),
        ]
        log(f"downloading the wheelhouse for Python {python_version} into {final}")
        for args in (["--require-hashes", "-r", str(REPO / "app/requirements.txt")], extra):
            proc = subprocess.run(common + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if proc.returncode != 0:
                shutil.rmtree(tmp, ignore_errors=True)
                raise RuntimeError("pip download failed:\n" + "\n".join(proc.stdout.splitlines()[-20:]))
        (tmp / ".complete").write_text("")
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for old in CACHE_ROOT.glob(f"wheelhouse-py{python_version}-*"):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
        return final


def make_test_ca(directory: Path, domain: str = DOMAIN) -> dict[str, Path]:
    """A CA and a server certificate for `domain` (SAN), like certbot's files."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt = directory / "privkey.pem", directory / "server.csr", directory / "cert.pem"
    ext = directory / "server.ext"

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(ca_key), "-out", str(ca_crt), "-days", "7", "-subj", "/CN=Skinmenu e2e test CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={domain}")
    ext.write_text(
        f"subjectAltName=DNS:{domain}\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
    )
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key), "-CAcreateserial",
            "-out", str(crt), "-days", "7", "-extfile", str(ext))
    fullchain = directory / "fullchain.pem"
    fullchain.write_text(crt.read_text() + ca_crt.read_text())
    return {"ca": ca_crt, "cert": crt, "fullchain": fullchain, "privkey": key}


def snapshot_source(destination: Path) -> str:
    """A git bundle of the working tree as one commit (tracked + untracked, not ignored files), so
    the tier tests what is in the checkout, committed or not. Returns the commit's sha."""
    work = destination.parent / "source-snapshot"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    listing = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True, capture_output=True,
    ).stdout.split(b"\0")
    for raw in listing:
        if not raw:
            continue
        rel = raw.decode()
        src = REPO / rel
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the working tree
        dst = work / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
        else:
            shutil.copy2(src, dst)
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"],
                          capture_output=True, text=True).stdout.strip() or "unknown"
    env = {**os.environ, "GIT_AUTHOR_NAME": "e2e", "GIT_AUTHOR_EMAIL": "e2e@skinmenu.invalid",
           "GIT_COMMITTER_NAME": "e2e", "GIT_COMMITTER_EMAIL": "e2e@skinmenu.invalid"}
    git = ["git", "-C", str(work), "-c", "init.defaultBranch=main", "-c", "core.hooksPath=/dev/null"]
    subprocess.run([*git, "init", "-q"], check=True, env=env)
    subprocess.run([*git, "add", "-A"], check=True, env=env)
    subprocess.run([*git, "commit", "-q", "-m", f"Skinmenu working tree (HEAD {head})"], check=True, env=env)
    subprocess.run([*git, "bundle", "create", "-q", str(destination), "main"], check=True, env=env)
    sha = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True, env=env).stdout.strip()
    shutil.rmtree(work, ignore_errors=True)
    return sha


@dataclass
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def describe(self) -> str:
        return (f"$ {self.argv[-1] if self.argv else ''}\nexit {self.returncode} after {self.seconds:.1f}s\n"
                f"--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}")


class CommandFailed(AssertionError):
    pass


CONTAINER_ENV = [
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG=C.UTF-8",
    "HOME=/root",
    "TERM=dumb",
    "SYSTEMD_PAGER=",
    "SYSTEMD_COLORS=0",
]


@dataclass
class Container:
    """One booted throw-away container: an overlay on the cached rootfs."""

    rootfs: Path
    binds: dict[str, Path] = field(default_factory=dict)  # container path -> host path (read-only)
    name: str = field(default_factory=lambda: f"skinmenu-e2e-{secrets.token_hex(3)}")
    workdir: Path | None = None
    root: Path | None = None
    leader: int | None = None
    process: subprocess.Popen | None = None
    mounted: bool = False
    boot_seconds: float = 0.0
    network: tuple[str, ...] = ("--private-network",)  # or e.g. ("--network-zone=NAME",)

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self, timeout: float = 120) -> None:
        WORK_ROOT.mkdir(parents=True, exist_ok=True)
        self.workdir = Path(tempfile.mkdtemp(prefix="skinmenu-e2e-", dir=WORK_ROOT))
        self.root = self.workdir / "root"
        self.root.mkdir()
        upper, work = self.workdir / "upper", self.workdir / "work"
        upper.mkdir()
        work.mkdir()
        started = time.monotonic()
        try:
            subprocess.run(
                ["mount", "-t", "overlay", "overlay", "-o",
                 f"lowerdir={self.rootfs},upperdir={upper},workdir={work}", str(self.root)],
                check=True, capture_output=True, text=True,
            )
            self.mounted = True
        except subprocess.CalledProcessError as exc:
            log(f"overlayfs unavailable ({exc.stderr.strip()}); copying the rootfs instead")
            subprocess.run(["cp", "-a", "--reflink=auto", f"{self.rootfs}/.", str(self.root)], check=True)
        argv = [
            "systemd-nspawn", "--quiet", "--boot", f"--directory={self.root}", f"--machine={self.name}",
            *self.network, "--register=no", "--keep-unit", "--console=passive",
            *[f"--bind-ro={host}:{inside}" for inside, host in self.binds.items()],
        ]
        self.console_log = self.workdir / "nspawn.log"
        with open(self.console_log, "w") as out:
            env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID")}
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                            env=env, start_new_session=True)
        write_owner(self.workdir, nspawn=self.process.pid)  # a reaper's due even before PID 1 shows
        self.leader = self._find_leader(timeout=30)
        write_owner(self.workdir, nspawn=self.process.pid, leader=self.leader)
        self._wait_booted(timeout)
        self.boot_seconds = time.monotonic() - started
        log(f"container {self.name} booted in {self.boot_seconds:.1f}s (PID 1 = host pid {self.leader})")

    def _find_leader(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited with {self.process.returncode}:\n{self.console_log.read_text()[-3000:]}")
            for pid in _children(self.process.pid):
                try:
                    environ = Path(f"/proc/{pid}/environ").read_bytes()
                except OSError:
                    continue
                if b"container=systemd-nspawn" in environ:
                    return pid
            time.sleep(0.1)
        raise RuntimeError("the container's PID 1 did not appear")

    def _wait_booted(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited with {self.process.returncode}:\n{self.console_log.read_text()[-3000:]}")
            result = self.run("systemctl is-system-running", check=False, timeout=20)
            state = result.stdout.strip()
            if state in ("running", "degraded"):
                if state == "degraded":
                    failed = self.run("systemctl --failed --no-legend --plain", check=False).stdout.strip()
                    log(f"container is degraded (acceptable); failed units: {failed or '?'}")
                return
            time.sleep(0.5)
        raise RuntimeError(f"the container did not finish booting within {timeout:.0f}s (state {state!r})")

    def stop(self, power_off_timeout: float = 30) -> None:
        """Power off (SIGTERM to nspawn = orderly shutdown), kill if it hangs, clean up."""
        started = time.monotonic()
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=power_off_timeout)
            except subprocess.TimeoutExpired:
                log(f"container {self.name} did not power off in {power_off_timeout:.0f}s; killing it")
                if self.leader:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.leader, signal.SIGKILL)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=15)
        if self.mounted and self.root is not None:
            if subprocess.run(["umount", str(self.root)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(self.root)], capture_output=True)
            self.mounted = False
        powered_off = time.monotonic()
        if self.workdir is not None and os.environ.get("SKINMENU_E2E_KEEP") != "1":
            shutil.rmtree(self.workdir, ignore_errors=True)
        log(f"container {self.name} stopped in {powered_off - started:.1f}s, its files removed in "
            f"{time.monotonic() - powered_off:.1f}s")

    # -- commands --------------------------------------------------------------------------------
    def argv(self, script: str, shell: str = "/bin/sh") -> list[str]:
        assert self.leader, "container not started"
        return ["nsenter", "--target", str(self.leader), "--all", "--root", "--wd", "--",
                "/usr/bin/env", "-i", *CONTAINER_ENV, shell, "-c", script]

    def run(self, script: str, *, check: bool = True, input: str | None = None, timeout: float = 600,
            shell: str = "/bin/sh") -> Result:
        """Run a shell script as root inside the container."""
        argv = self.argv(script, shell)
        started = time.monotonic()
        try:
            proc = subprocess.run(argv, input=input, capture_output=True, text=True, errors="replace", timeout=timeout,
                                  stdin=None if input is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise CommandFailed(f"timed out after {timeout:.0f}s: {script}\n{exc.stdout or ''}{exc.stderr or ''}")
        result = Result(argv, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)
        if check and proc.returncode != 0:
            raise CommandFailed(result.describe())
        return result

    def popen(self, script: str, **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self.argv(script), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, **kwargs)

    def write(self, path: str, content: str | bytes, *, owner: str = "root:root", mode: str = "0644") -> None:
        data = content.encode() if isinstance(content, str) else content
        q = shlex.quote(path)
        argv = self.argv(f"install -D -o {owner.split(':')[0]} -g {owner.split(':')[1]} -m {mode} /dev/stdin {q}")
        subprocess.run(argv, input=data, check=True, capture_output=True)

    def read(self, path: str) -> str:
        return self.run(f"cat {shlex.quote(path)}").stdout


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_owner(directory: Path, **pids: int) -> None:
    """Mark `directory` as this session's, with the processes a reaper must end if it is killed."""
    (directory / "owner.json").write_text(json.dumps({"owner": os.getpid(), **pids}))


# Directories whose name carries the owning session's pid: skinmenu-e2e-<kind>-<pid>-<random>.
_PID_NAMED = ("skinmenu-e2e-share-", "skinmenu-e2e-fleet-")


def _ours(pid: int | None, workdir: Path, key: str) -> bool:
    """Still the process the owner file names (not a pid reused by someone else)?"""
    if not _alive(pid):
        return False
    try:
        if key == "leader":
            return b"container=systemd-nspawn" in Path(f"/proc/{pid}/environ").read_bytes()
        return str(workdir).encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def reap_stale() -> None:
    """Containers, load balancers, share and fleet dirs left by a test session that was killed
    (its finalizers never ran): end their processes, unmount, delete; then the network zones
    no container is on any more. Sessions still running are left alone."""
    for workdir in WORK_ROOT.glob("skinmenu-e2e-*"):
        owner_file = workdir / "owner.json"
        if workdir.name.startswith(_PID_NAMED):
            part = workdir.name.split("-")[3]
            if not _alive(int(part) if part.isdigit() else None):
                shutil.rmtree(workdir, ignore_errors=True)
            continue
        if not owner_file.exists():
            if time.time() - workdir.stat().st_mtime < 3600:
                continue  # being created right now by another session
            info = {}
        else:
            info = json.loads(owner_file.read_text() or "{}")
            if _alive(info.get("owner")):
                continue
        log(f"reaping {workdir} left by a killed session")
        for key, pid in info.items():
            if key != "owner" and _ours(pid, workdir, key):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        root = workdir / "root"
        if os.path.ismount(root):
            if subprocess.run(["umount", str(root)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(root)], capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)
    _reap_empty_zones()


ZONE_PREFIX = "skm"  # the multi-server tier's nspawn network zones: bridge vz-skm<random>


def _reap_empty_zones() -> None:
    """nspawn removes a zone's bridge when its last container exits in order; a SIGKILLed nspawn
    leaves it, with the host's address on the subnet a later session may pick."""
    links = subprocess.run(["ip", "-j", "link", "show", "type", "bridge"], capture_output=True, text=True)
    if links.returncode != 0:
        return
    for link in json.loads(links.stdout or "[]"):
        name = link.get("ifname", "")
        if not name.startswith(f"vz-{ZONE_PREFIX}"):
            continue
        members = subprocess.run(["ip", "-j", "link", "show", "master", name], capture_output=True, text=True)
        if members.returncode == 0 and not json.loads(members.stdout or "[]"):
            log(f"removing the empty network zone bridge {name} left by a killed session")
            subprocess.run(["ip", "link", "delete", name], capture_output=True)


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(x) for x in (task / "children").read_text().split()]
    return out


# -- the server guide as executable steps ------------------------------------------------------

GUIDE = REPO / "docs/server-guide.md"
_BLOCK_RE = re.compile(r"<!--\s*e2e:\s*(?P<tag>[^>]*?)\s*-->\s*\n```(?P<lang>[a-z]*)\n(?P<body>.*?)\n```", re.S)
_FENCE_RE = re.compile(r"^```(sh|bash|shell)\s*$", re.M)


@dataclass
class GuideBlock:
    action: str  # run | replace | test | manual
    name: str
    body: str
    line: int


def guide_blocks(text: str | None = None) -> list[GuideBlock]:
    """The guide's tagged shell blocks, in order. Every sh block must be tagged."""
    text = GUIDE.read_text() if text is None else text
    blocks = []
    tagged_lines = set()
    for match in _BLOCK_RE.finditer(text):
        tag = match.group("tag").split()
        action, name = tag[0], " ".join(tag[1:])
        line = text.count("\n", 0, match.start("lang")) + 1
        tagged_lines.add(line)
        blocks.append(GuideBlock(action, name, match.group("body"), line))
    untagged = [text.count("\n", 0, m.start()) + 1 for m in _FENCE_RE.finditer(text)]
    untagged = [n for n in untagged if n not in tagged_lines]
    if untagged:
        raise AssertionError(f"{GUIDE}: shell blocks without an <!-- e2e: ... --> tag at line(s) {untagged}")
    return blocks
