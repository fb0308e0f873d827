"""Bad input, bad configuration, corrupted state and a held lock, through the real CLI: each is
the documented exit code and ONE `deployer: error:` line, never a traceback, and nothing in
deploy_to changed while the live release keeps serving.

One deployment serves the whole table: `base` is live, `second` is built but was never live, so
"nothing changed" is meaningful and no case has to build anything. A case may arrange something
first (a bad config file, a corrupted RELEASE.json, a held lock); whatever it breaks inside
deploy_to is put back afterwards, and every case starts by checking that the deployment is
exactly as it was at the start.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import yaml

HOLD_LOCK = """
import sys, time
from pathlib import Path
from deployer.lock import deploy_lock
from deployer.paths import Paths
with deploy_lock(Paths(Path(sys.argv[1])), "deployer deploy main (held by a test)"):
    print("locked", flush=True)
    time.sleep(120)
"""

# The live site's SQLite keeps these beside the database while a request has it open (WAL mode):
# they come and go with the site's own traffic, not with anything the deployer does.
SQLITE_TRANSIENT = ("-wal", "-shm", "-journal")


@dataclass
class Site:
    """The module's deployment, the shas it knows, and what a case must put back."""

    d: object  # conftest.Deployment
    base: str
    second: str
    third: str  # a commit of the source repo that was never built
    config: Path  # the config a case runs with (a bad one for config cases)
    pristine: dict = field(default_factory=dict)
    undo: list[Callable[[], bool]] = field(default_factory=list)
    last: dict | None = None  # the last snapshot, while nothing was written into deploy_to since
    broke_state: bool = False  # the case's arrangement wrote into deploy_to
    _hashes: dict = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.d.deploy_to

    def release_dir(self, sha: str) -> Path:
        return self.root / "releases" / sha

    def valid_config(self) -> dict:
        return yaml.safe_load(self.d.config_file.read_text())

    def keep(self, *paths: Path) -> None:
        """Put these paths back afterwards as they are now (file bytes and mode, symlink, or
        absence). Called by an arrangement: it is about to change them."""
        for path in paths:
            self.undo.append(_restorer(path))
            self.broke_state |= path.is_relative_to(self.root)

    def put_back(self) -> bool:
        """Undo what the case did; True when anything was written."""
        wrote = False
        for restore in reversed(self.undo):
            wrote |= bool(restore())
        self.undo.clear()
        return wrote

    def now(self) -> dict:
        """A snapshot of deploy_to now: the last one taken if nothing was written since."""
        return self.last if self.last is not None else self.snapshot()

    def snapshot(self) -> dict:
        """Path -> (type, mode, size, content hash | symlink target) for releases/, current,
        shared/ and state/ (but the lock file, which every locking command rewrites)."""
        found: dict[str, tuple] = {}
        for top in ("releases", "current", "shared", "state"):
            path = str(self.root / top)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                found[top] = ("absent",)
                continue
            found[top] = self._entry(path, st)
            if stat.S_ISDIR(st.st_mode):
                self._walk(path, top, found)
        found.pop("state/deploy.lock", None)
        return found

    def _walk(self, path: str, rel: str, found: dict) -> None:
        with os.scandir(path) as entries:
            for entry in entries:
                name = f"{rel}/{entry.name}"
                if name.endswith(SQLITE_TRANSIENT):
                    continue
                st = entry.stat(follow_symlinks=False)
                found[name] = self._entry(entry.path, st)
                if stat.S_ISDIR(st.st_mode):
                    self._walk(entry.path, name, found)

    def _entry(self, path: str, st: os.stat_result) -> tuple:
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISLNK(st.st_mode):
            return ("link", os.readlink(path))
        if stat.S_ISDIR(st.st_mode):
            return ("dir", mode)
        if stat.S_ISREG(st.st_mode):
            # Any write to a file changes its ctime, which nobody can set back: a file whose
            # inode, size, mtime and ctime are unchanged has unchanged content, so its hash is
            # computed once (the venvs hold thousands of files).
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            if key not in self._hashes:
                with open(path, "rb") as fh:
                    self._hashes[key] = hashlib.file_digest(fh, "sha256").hexdigest()
            return ("file", mode, st.st_size, self._hashes[key])
        return ("other", stat.S_IFMT(st.st_mode), mode)


def _restorer(path: Path) -> Callable[[], bool]:
    """A function that puts `path` back as it is now, only if it changed; True if it wrote."""
    if path.is_symlink():
        target = os.readlink(path)

        def changed() -> bool:
            return not path.is_symlink() or os.readlink(path) != target

        def write() -> None:
            os.symlink(target, path)
    elif path.is_file():
        data, mode = path.read_bytes(), stat.S_IMODE(path.stat().st_mode)

        def changed() -> bool:
            return (path.is_symlink() or not path.is_file() or stat.S_IMODE(path.stat().st_mode) != mode
                    or path.read_bytes() != data)

        def write() -> None:
            path.write_bytes(data)
            path.chmod(mode)
    elif not path.exists() and not path.is_symlink():
        def changed() -> bool:
            return path.exists() or path.is_symlink()

        def write() -> None:
            pass
    else:
        raise AssertionError(f"cannot keep {path}")

    def put_back() -> bool:
        if not changed():
            return False
        _remove(path)
        write()
        return True
    return put_back


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _conftest(request):
    here = Path(__file__).with_name("conftest.py")
    for plugin in request.config.pluginmanager.get_plugins():
        if getattr(plugin, "__file__", None) and Path(plugin.__file__) == here:
            return plugin
    raise AssertionError("tests/integration/conftest.py is not loaded")


@pytest.fixture(scope="module")
def site(request, tmp_path_factory, source_repo, release_python, uv_cache, migrated_db):
    conftest = _conftest(request)
    d = conftest.Deployment(tmp_path_factory.mktemp("bad-input"), source_repo, release_python, uv_cache)
    d.database.parent.mkdir(parents=True)
    shutil.copy(migrated_db, d.database)
    try:
        d.ok("deploy", "base")
        d.ok("release", "second")
        s = Site(d, source_repo.sha("base"), source_repo.sha("second"), source_repo.sha("third"), d.config_file)
        s.pristine = s.snapshot()
        yield s
    finally:
        d.stop()


# --- what a case arranges before it runs -------------------------------------------------------

def bad_config(mutate: Callable[[dict], None] | None = None, text: str | bytes | None = None):
    """The case runs with a config file that is the deployment's own, broken one way."""
    def arrange(s: Site) -> None:
        path = s.d.root / "bad-releases.yml"
        _remove(path)
        if text is not None:
            content = text if isinstance(text, bytes) else text.encode()
        else:
            data = s.valid_config()
            mutate(data)
            content = yaml.safe_dump(data, sort_keys=False, allow_unicode=True).encode()
        path.write_bytes(content)
        s.config = path
    return arrange


def raw(replace_from: str, replace_to: str):
    """A config text edit on the deployment's YAML (for what yaml.safe_dump cannot write)."""
    def arrange(s: Site) -> None:
        text = yaml.safe_dump(s.valid_config(), sort_keys=False)
        assert replace_from in text, replace_from
        bad_config(text=text.replace(replace_from, replace_to, 1))(s)
    return arrange


def fifo_config(s: Site) -> None:
    path = s.d.root / "fifo-releases.yml"
    _remove(path)
    os.mkfifo(path)
    s.config = path


def directory_config(s: Site) -> None:
    s.config = s.d.root


def env_file(content: str | bytes | None = None, mode: int = 0o600, edit=None):
    """The deployment's env file, rewritten (it lives outside deploy_to; put back afterwards)."""
    def arrange(s: Site) -> None:
        s.keep(s.d.env_file)
        if edit is not None:
            new = edit(s.d.env_file.read_text())
        else:
            new = content
        if new is not None:
            s.d.env_file.write_bytes(new if isinstance(new, bytes) else new.encode())
        s.d.env_file.chmod(mode)
    return arrange


def without_line(prefix: str):
    return lambda text: "".join(line for line in text.splitlines(True) if not line.startswith(prefix))


def env_file_is_directory(s: Site) -> None:
    directory = s.d.root / "env-dir"
    directory.mkdir(mode=0o700, exist_ok=True)
    bad_config(lambda d: d.update(env_file=str(directory)))(s)


def cacert_directory(s: Site) -> None:
    bad_config(lambda d: d["smoke"].update(url=f"https://127.0.0.1:{s.d.port}", cacert=str(s.d.root)))(s)


def metadata_of_second(content: bytes | None):
    def arrange(s: Site) -> None:
        path = s.release_dir(s.second) / "RELEASE.json"
        s.keep(path)
        _remove(path)
        if content is not None:
            path.write_bytes(content)
    return arrange


def metadata_of_second_naming(sha_of: str):
    def arrange(s: Site) -> None:
        path = s.release_dir(s.second) / "RELEASE.json"
        s.keep(path)
        path.write_text(path.read_text().replace(s.second, getattr(s, sha_of)))
    return arrange


def history(edit: Callable[[Site, bytes], bytes]):
    def arrange(s: Site) -> None:
        path = s.root / "state" / "history.jsonl"
        s.keep(path)
        path.write_bytes(edit(s, path.read_bytes()))
    return arrange


def bad_line_first(line: bytes):
    return history(lambda s, data: line.replace(b"<second>", s.second.encode()) + b"\n" + data)


def current_pointing_at(target: Callable[[Site], str]):
    def arrange(s: Site) -> None:
        link = s.root / "current"
        s.keep(link)
        tmp = s.root / "current.test-tmp"
        os.symlink(target(s), tmp)
        os.replace(tmp, link)
    return arrange


def replaced_by(name: str, kind: str):
    """deploy_to/<name> replaced by hand: by a directory, by a regular file, or gone."""
    def arrange(s: Site) -> None:
        path = s.root / name
        s.keep(path)
        _remove(path)
        if kind == "directory":
            path.mkdir()
            (path / "index.html").write_text("copied by hand\n")
        elif kind == "file":
            path.write_text("written by hand\n")
    return arrange


def fake_release_sharing_a_prefix(s: Site) -> None:
    # A second directory whose name shares the first 8 hex digits with base: "base[:8]" is ambiguous.
    twin = s.root / "releases" / (s.base[:8] + ("0" if s.base[8] != "0" else "1") + s.base[9:])
    s.keep(twin)
    twin.mkdir()


def lock_held(s: Site) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(s.root)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"

    def release() -> bool:
        holder.kill()
        holder.wait()
        return False  # the lock file is not part of the snapshot
    s.undo.append(release)


# --- the table ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    code: int = 2
    arrange: Callable[[Site], None] | None = None
    usage: bool = False  # a click usage error, which prints `Error: ...` after its usage lines


def c(id: str, *args: str, code: int = 2, arrange=None, usage: bool = False) -> Case:
    return Case(id, args, code, arrange, usage)


def cfg(id: str, mutate=None, *, text=None, arrange=None) -> Case:
    """A config case: `deploy base` (a no-op on this site if the config were accepted)."""
    return Case(f"config-{id}", ("deploy", "base"), 2, arrange or bad_config(mutate, text))


def smoke(**values):
    return lambda d: d["smoke"].update(values)


def service(**values):
    return lambda d: d["service"].update(values)


def django(**values):
    return lambda d: d["django"].update(values)


def top(**values):
    return lambda d: d.update(values)


def drop(*keys):
    def mutate(d):
        section = d
        for key in keys[:-1]:
            section = section[key]
        del section[keys[-1]]
    return mutate


CASES = [
    # refs: release and deploy
    c("release-unknown-branch", "release", "no-such-branch"),
    c("release-unknown-sha", "release", "0" * 40),
    c("release-option-injection", "release", "--", "--upload-pack=touch /tmp/pwned"),
    c("release-path-up", "release", "../../etc/passwd"),
    c("release-shell", "release", "main; rm -rf /"),
    c("release-newline", "release", "main\nrm"),
    c("release-empty", "release", ""),
    c("release-range", "release", "base..second"),
    c("release-reflog", "release", "HEAD@{-1}"),
    c("release-help-as-ref", "release", "--", "--help"),
    c("release-dotdot", "release", ".."),
    c("release-up-inside-refs", "release", "refs/../x"),
    c("release-300-chars", "release", "r" * 300),
    c("deploy-space", "deploy", "a b"),
    c("deploy-unknown-branch", "deploy", "no-such-branch"),
    c("deploy-empty", "deploy", ""),
    # activate targets
    c("activate-path-up", "activate", "../releases"),
    c("activate-too-short", "activate", "abc"),
    c("activate-not-hex", "activate", "g" * 40),
    c("activate-option-like", "activate", "--", "-rf"),
    c("activate-help-as-sha", "activate", "--", "--help"),
    c("activate-prefix-dotdot", "activate", "0123abcd/.."),
    c("activate-empty", "activate", ""),
    c("activate-41-hex", "activate", "<base>0"),
    c("activate-trailing-newline", "activate", "<base12>\n"),
    c("activate-releases-path", "activate", "releases/<second>"),
    c("activate-unbuilt-prefix", "activate", "0000"),
    c("activate-unbuilt-commit", "activate", "<third>"),
    c("activate-ambiguous-prefix", "activate", "<base8>", arrange=fake_release_sharing_a_prefix),
    # rollback --to
    c("rollback-to-empty", "rollback", "--to", ""),
    c("rollback-to-blank", "rollback", "--to", "  "),
    c("rollback-to-not-hex", "rollback", "--to", "zz"),
    c("rollback-to-unbuilt-commit", "rollback", "--to", "<third>"),
    c("rollback-to-ambiguous", "rollback", "--to", "<base8>", arrange=fake_release_sharing_a_prefix),
    c("rollback-migrate-and-force", "rollback", "--migrate", "--force"),
    c("rollback-without-an-earlier-release", "rollback", code=1),
    # prune --keep
    c("prune-keep-0", "prune", "--keep", "0"),
    c("prune-keep-negative", "prune", "--keep", "-1"),
    c("prune-keep-word", "prune", "--keep", "abc"),
    c("prune-keep-fraction", "prune", "--keep", "1.5"),
    c("prune-keep-empty", "prune", "--keep", ""),
    c("prune-keep-huge", "prune", "--keep", "9" * 5000),
    c("prune-keep-missing-value", "prune", "--keep", usage=True),
    # --wait
    c("wait-nan", "release", "base", "--wait", "nan"),
    c("wait-inf", "release", "base", "--wait", "inf"),
    c("wait-negative", "release", "base", "--wait", "-1"),
    c("wait-overflow", "release", "base", "--wait", "1e999"),
    c("wait-word", "deploy", "base", "--wait", "abc"),
    c("wait-NaN-activate", "activate", "<second>", "--wait", "NaN"),
    c("wait-nan-prune", "prune", "--keep", "1", "--wait", "nan"),
    # click-level usage errors
    c("usage-release-without-ref", "release", usage=True),
    c("usage-unknown-command", "no-such-command", usage=True),
    c("usage-extra-argument", "activate", "<second>", "extra", usage=True),
    # which config file
    c("config-option-empty", "--config", "", "deploy", "base"),
    c("config-file-missing", "--config", "/nonexistent/releases.yml", "deploy", "base"),
    cfg("file-is-a-directory", arrange=directory_config),
    cfg("file-is-a-fifo", arrange=fifo_config),
    # config: broken YAML and encodings
    cfg("unclosed-bracket", text="app: skinmenu\nrepo: [unclosed\n"),
    cfg("not-utf8", text=b"app: skin\xffmenu\n"),
    cfg("deep-nesting", text="app: " + "[" * 20000),
    cfg("control-character", text="app: skin\x07menu\n"),
    cfg("escape-sequence-in-unknown-key", top(**{"colour\x1b[2J\x1b[31m": "red"})),
    cfg("newline-in-unknown-key", top(**{"a\nb": 1})),
    cfg("newline-in-duplicate-key", text='"a\\nb": 1\n"a\\nb": 2\n'),
    cfg("duplicate-key", arrange=raw("app: skinmenu\n", "app: skinmenu\napp: other\n")),
    cfg("python-tag", text="app: !!python/object/apply:os.system [touch /tmp/pwned]\n"),
    cfg("integer-too-long", arrange=raw("keep_releases: 5", "keep_releases: " + "9" * 5000)),
    # config: shape, unknown and missing keys
    cfg("empty-file", text=""),
    cfg("top-level-list", text="- app\n- repo\n"),
    cfg("unknown-key", top(colour="blue")),
    cfg("unknown-nested-key", smoke(retries=3)),
    cfg("missing-deploy-to", drop("deploy_to")),
    cfg("missing-django-settings", drop("django", "settings")),
    cfg("service-is-a-string", top(service="systemctl restart x")),
    # config: wrong types and numbers
    cfg("keep-releases-word", top(keep_releases="five")),
    cfg("keep-releases-boolean", top(keep_releases=True)),
    cfg("keep-releases-0", top(keep_releases=0)),
    cfg("keep-releases-inf", top(keep_releases=float("inf"))),
    cfg("smoke-timeout-nan", smoke(timeout=float("nan"))),
    cfg("smoke-timeout-inf", smoke(timeout=float("inf"))),
    cfg("smoke-timeout-negative", smoke(timeout=-1)),
    cfg("smoke-timeout-string", smoke(timeout="30")),
    cfg("smoke-check-static-string", smoke(check_static="yes")),
    cfg("app-nul", top(app="skin\x00menu")),
    cfg("deploy-to-trailing-newline", lambda d: d.update(deploy_to=d["deploy_to"] + "\n")),
    # config: smoke
    cfg("smoke-url-no-scheme", smoke(url="127.0.0.1:8000")),
    cfg("smoke-url-no-host", smoke(url="http://")),
    cfg("smoke-url-port-out-of-range", smoke(url="http://127.0.0.1:99999")),
    cfg("smoke-url-port-0", smoke(url="http://127.0.0.1:0")),
    cfg("smoke-url-userinfo", smoke(url="http://admin:secret@127.0.0.1")),
    cfg("smoke-url-query", smoke(url="http://127.0.0.1/?debug=1")),
    cfg("smoke-url-fragment", smoke(url="http://127.0.0.1/#top")),
    cfg("smoke-url-space", smoke(url="http://127.0.0.1/a b")),
    cfg("smoke-url-broken-ipv6", smoke(url="http://[::1")),
    cfg("smoke-resolve-not-a-host", smoke(resolve="not a host")),
    cfg("smoke-resolve-with-port", smoke(resolve="127.0.0.1:80")),
    cfg("smoke-cacert-missing", smoke(url="https://127.0.0.1", cacert="/nonexistent/ca.pem")),
    cfg("smoke-cacert-directory", arrange=cacert_directory),
    # config: service commands
    cfg("service-restart-unbalanced-quote", service(restart="/path/restart.sh 'oops")),
    cfg("service-restart-no-program", service(restart="''")),
    cfg("service-restart-list", service(restart=["systemctl", "restart"])),
    cfg("service-is-active-unbalanced-quote", service(is_active='systemctl is-active "x')),
    # config: paths
    cfg("deploy-to-root", top(deploy_to="/")),
    cfg("deploy-to-resolves-to-root", top(deploy_to="/usr/../..")),
    cfg("deploy-to-a-file", top(deploy_to=__file__)),
    cfg("project-dir-outside", django(project_dir="../../elsewhere")),
    cfg("settings-not-a-module", django(settings="config/settings/production")),
    # config: shared_dirs and required_env
    cfg("shared-dirs-venv", top(shared_dirs=["media", "db", "venv"])),
    cfg("shared-dirs-staticfiles", top(shared_dirs=["staticfiles"])),
    cfg("shared-dirs-release-json", top(shared_dirs=["RELEASE.json"])),
    cfg("shared-dirs-revision", top(shared_dirs=["REVISION"])),
    cfg("shared-dirs-project-dir", top(shared_dirs=["media", "app"])),
    cfg("shared-dirs-duplicate", top(shared_dirs=["media", "db", "media"])),
    cfg("shared-dirs-path", top(shared_dirs=["../etc"])),
    cfg("shared-dirs-string", top(shared_dirs="media")),
    cfg("required-env-space", top(required_env=["NOT A NAME"])),
    cfg("required-env-digit-first", top(required_env=["1ST"])),
    # the env file
    c("env-missing-variable", "deploy", "base", arrange=env_file(edit=without_line("WAGTAILADMIN_BASE_URL="))),
    c("env-others-readable", "deploy", "base", arrange=env_file(mode=0o644)),
    c("env-is-a-directory", "deploy", "base", arrange=env_file_is_directory),
    c("env-not-utf8", "activate", "<second>", arrange=env_file(edit=lambda t: t.encode() + b"NOTE=caf\xe9\n")),
    c("env-bad-line", "deploy", "base", arrange=env_file(edit=lambda t: t + "this is not a pair\n")),
    c("env-nul-in-value", "deploy", "base", arrange=env_file(edit=lambda t: t + "A=x\x00y\n")),
    c("env-missing-file", "deploy", "base", arrange=lambda s: (s.keep(s.d.env_file), s.d.env_file.unlink())),
    # corrupted state: the target's RELEASE.json
    c("state-release-json-garbage", "activate", "<second>", code=1, arrange=metadata_of_second(b"{not json")),
    c("state-release-json-not-utf8", "activate", "<second>", code=1, arrange=metadata_of_second(b'{"sha": "\xff"}')),
    c("state-release-json-a-list", "activate", "<second>", code=1, arrange=metadata_of_second(b"[1, 2]")),
    c("state-release-json-missing", "activate", "<second>", code=1, arrange=metadata_of_second(None)),
    c("state-release-json-names-another-sha", "activate", "<second>", code=1,
      arrange=metadata_of_second_naming("base")),
    c("state-release-json-garbage-rollback-to", "rollback", "--to", "<second>", code=1,
      arrange=metadata_of_second(b"\x00\x01garbage")),
    c("state-release-json-not-utf8-rollback-to", "rollback", "--to", "<second>", code=1,
      arrange=metadata_of_second(b"\xff\xfe")),
    # corrupted state: history.jsonl (rollback has no earlier release either way: exit 1)
    c("state-history-not-utf8", "rollback", code=1, arrange=bad_line_first(b'{"to": "\xff\xfe", "result": "ok"}')),
    c("state-history-to-is-a-list", "rollback", code=1,
      arrange=bad_line_first(b'{"action": "deploy", "to": ["<second>"], "result": "ok"}')),
    c("state-history-to-is-a-number", "rollback", code=1,
      arrange=bad_line_first(b'{"action": "deploy", "to": 12345, "result": "ok"}')),
    c("state-history-to-is-an-object", "rollback", code=1,
      arrange=bad_line_first(b'{"action": "deploy", "to": {"sha": "<second>"}, "result": "ok"}')),
    c("state-history-line-is-a-list", "rollback", code=1, arrange=bad_line_first(b'["deploy", "<second>"]')),
    c("state-history-torn-last-line", "rollback", code=1,
      arrange=history(lambda s, data: data + b'{"action": "deploy", "to": "' + s.second[:20].encode())),
    # corrupted state: current
    c("state-current-dangling", "rollback", code=1, arrange=current_pointing_at(lambda s: "releases/" + "e" * 40)),
    c("state-current-outside-releases", "rollback", code=1, arrange=current_pointing_at(lambda s: "shared")),
    c("state-current-outside-named-like-a-release", "rollback", code=1,
      arrange=current_pointing_at(lambda s: f"/nonexistent/{s.base}")),
    c("state-current-a-file-via-symlink", "rollback", code=1,
      arrange=current_pointing_at(lambda s: f"releases/{s.base}/RELEASE.json")),
    c("state-current-missing", "rollback", code=1, arrange=replaced_by("current", "missing")),
    # corrupted state: what the switch or the history line would refuse, refused before the first step
    c("state-current-a-directory-activate", "activate", "<second>", code=1, arrange=replaced_by("current", "directory")),
    c("state-current-a-directory-rollback-to", "rollback", "--to", "<second>", code=1,
      arrange=replaced_by("current", "directory")),
    c("state-current-a-directory-rollback", "rollback", code=1, arrange=replaced_by("current", "directory")),
    c("state-current-a-file-activate", "activate", "<second>", code=1, arrange=replaced_by("current", "file")),
    c("state-current-a-file-deploy", "deploy", "third", code=1, arrange=replaced_by("current", "file")),
    c("state-history-a-directory-activate", "activate", "<second>", code=1,
      arrange=replaced_by("state/history.jsonl", "directory")),
    c("state-underway-a-directory-activate", "activate", "<second>", code=1,
      arrange=replaced_by("state/underway.json", "directory")),
    # the lock
    c("lock-held-release", "release", "base", code=3, arrange=lock_held),
    c("lock-held-deploy", "deploy", "base", code=3, arrange=lock_held),
    c("lock-held-activate", "activate", "<second>", code=3, arrange=lock_held),
    c("lock-held-rollback", "rollback", code=3, arrange=lock_held),
    c("lock-held-prune", "prune", "--keep", "1", code=3, arrange=lock_held),
    c("lock-held-wait-runs-out", "release", "base", "--wait", "0.3", code=3, arrange=lock_held),
]


def _argv(s: Site, case: Case) -> list[str]:
    names = {"base": s.base, "base8": s.base[:8], "base12": s.base[:12], "second": s.second, "third": s.third}
    args = []
    for arg in case.args:
        for name, value in names.items():
            arg = arg.replace(f"<{name}>", value)
        args.append(arg)
    return args if args[:1] == ["--config"] else ["--config", str(s.config), *args]


def _changes(before: dict, after: dict) -> list[str]:
    return sorted(f"{path}: {before.get(path)} -> {after.get(path)}"
                  for path in before.keys() | after.keys() if before.get(path) != after.get(path))


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_clean_line_and_changes_nothing(site, case):
    assert not _changes(site.pristine, site.now()), "an earlier case left the deployment changed"
    site.config = site.d.config_file
    site.broke_state = False
    # Whatever a failing case does to what is live, the next case starts from the same state.
    live_state = [_restorer(site.root / "current"), _restorer(site.root / "state" / "history.jsonl")]
    after = None
    try:
        if case.arrange:
            case.arrange(site)
        before = site.snapshot() if site.broke_state else site.now()
        env = {k: v for k, v in os.environ.items() if k not in ("DEPLOYER_CONFIG", "DEPLOYER_DEBUG")}
        result = subprocess.run([sys.executable, "-m", "deployer", *_argv(site, case)],
                                capture_output=True, text=True, timeout=60, env=env)
        after = site.snapshot()
        served = site.d.healthz()["release"]
    finally:
        site.undo[:0] = live_state
        wrote = site.put_back()
        site.last = None if wrote else after

    stderr = result.stderr
    assert "Traceback" not in stderr, stderr
    assert result.returncode == case.code, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    prefixes = ("deployer: error:", "Error:") if case.usage else ("deployer: error:",)
    assert lines and lines[-1].startswith(prefixes), stderr
    assert sum(line.startswith(("deployer: error:", "Error:")) for line in lines) == 1, stderr
    assert not _changes(before, after), _changes(before, after)
    assert served == site.base
    assert not os.path.exists("/tmp/pwned")
