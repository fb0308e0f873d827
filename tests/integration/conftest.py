"""Fixtures for the integration tier: real git repos, real uv venvs of the real app, real
Django checks and collectstatic, real gunicorn restarted by scripts/local-service.

A session-wide scratch source repository holds one branch per story (a visible change, a new
migration, a release whose check --deploy fails, one that cannot boot, one with a bad
requirement). Each test gets its own deploy root; all of them share one uv cache on the same
filesystem, and a database migrated once by a real first deploy.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import postgres_server
from fleet_setup import orchestrator, second, sshd  # noqa: F401 (fixtures of the orchestrator tests)
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCAL_SERVICE = REPO_ROOT / "scripts" / "local-service"
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Skinmenu Tests", "GIT_AUTHOR_EMAIL": "tests@skinmenu.invalid",
    "GIT_COMMITTER_NAME": "Skinmenu Tests", "GIT_COMMITTER_EMAIL": "tests@skinmenu.invalid",
    "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1",
}



def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.integration)


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env={**os.environ, **GIT_ENV})
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture(scope="session")
def release_python() -> str:
    """The interpreter releases are built with: Python 3.12 as in production (scripts/find-python)."""
    out = subprocess.run([str(REPO_ROOT / "scripts" / "find-python")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@dataclass
class SourceRepo:
    path: Path

    def sha(self, ref: str) -> str:
        return git(self.path, "rev-parse", f"{ref}^{{commit}}")


def _commit_on(repo: Path, branch: str, base: str, message: str, edit) -> None:
    git(repo, "checkout", "-q", "-B", branch, base)
    edit(repo)
    git(repo, "add", "-A", "app")
    git(repo, "commit", "-q", "-m", message)


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def _replace(path: Path, old: str, new: str) -> None:
    content = path.read_text()
    assert old in content, f"{old!r} not in {path}"
    path.write_text(content.replace(old, new))


def _add_migration(repo: Path) -> None:
    models = repo / "app" / "treatments" / "models.py"
    _replace(
        models,
        "    summary = models.CharField(",
        "    aftercare = models.TextField(blank=True, default=\"\")\n    summary = models.CharField(",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env["DJANGO_SETTINGS_MODULE"] = "config.settings.dev"
    out = subprocess.run(
        [sys.executable, "manage.py", "makemigrations", "treatments", "--name", "treatment_aftercare"],
        cwd=repo / "app", env=env, capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def _add_failing_migration(repo: Path) -> None:
    """A schema change, then a data step that raises: PostgreSQL rolls the whole migration back."""
    (repo / "app" / "treatments" / "migrations" / "9001_fails_halfway.py").write_text(
        "from django.db import migrations, models\n\n\n"
        "def fail(apps, schema_editor):\n"
        "    raise RuntimeError('this migration fails halfway')\n\n\n"
        "class Migration(migrations.Migration):\n"
        "    dependencies = [('treatments', '" + _latest_migration(repo, "treatments") + "')]\n"
        "    operations = [\n"
        "        migrations.AddField('treatmentpage', 'doomed', models.TextField(blank=True, default='')),\n"
        "        migrations.RunPython(fail, migrations.RunPython.noop),\n"
        "    ]\n"
    )
    _replace(repo / "app" / "treatments" / "models.py", "    summary = models.CharField(",
             "    doomed = models.TextField(blank=True, default=\"\")\n    summary = models.CharField(")


def _add_slow_migration(repo: Path) -> None:
    """A data step that takes minutes (no schema change): for django.migrate_timeout."""
    (repo / "app" / "treatments" / "migrations" / "9002_takes_minutes.py").write_text(
        "import time\n\nfrom django.db import migrations\n\n\n"
        "def slow(apps, schema_editor):\n"
        "    time.sleep(120)\n\n\n"
        "class Migration(migrations.Migration):\n"
        "    dependencies = [('treatments', '" + _latest_migration(repo, "treatments") + "')]\n"
        "    operations = [migrations.RunPython(slow, migrations.RunPython.noop)]\n"
    )


def _latest_migration(repo: Path, app: str) -> str:
    names = [p.stem for p in (repo / "app" / app / "migrations").glob("[0-9]*.py")]
    return max(names)


@pytest.fixture(scope="session")
def source_repo(tmp_path_factory) -> SourceRepo:
    """The app as it is in this working tree, with one branch per story."""
    repo = tmp_path_factory.mktemp("source") / "skinmenu"
    repo.mkdir()
    shutil.copytree(REPO_ROOT / "app", repo / "app", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(REPO_ROOT / ".gitignore", repo / ".gitignore")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "Skinmenu base")
    git(repo, "tag", "base")
    footer = repo / "app" / "templates" / "base.html"
    _commit_on(repo, "visible", "base", "Say hello in the footer", lambda r: (
        _replace(footer, '<footer class="site-footer">Skinmenu</footer>',
                 '<footer class="site-footer">Skinmenu, now with a visible change</footer>'),
        _append(r / "app" / "static" / "css" / "site.css", "\n.site-footer { font-weight: bold; }\n"),
    ))
    _commit_on(repo, "migration", "visible", "Treatments get an aftercare note", _add_migration)
    _commit_on(repo, "migration-no-boot", "migration", "A migration, and a WSGI app that cannot import",
               lambda r: _append(r / "app" / "config" / "wsgi.py", "\nraise RuntimeError('this release cannot boot')\n"))
    _commit_on(repo, "bad-migration", "base", "A migration that fails halfway", _add_failing_migration)
    _commit_on(repo, "slow-migration", "migration", "After the aftercare migration, one that takes minutes",
               _add_slow_migration)
    _commit_on(repo, "bad-check", "base", "Turn HSTS off (check --deploy must refuse)", lambda r: _append(
        r / "app" / "config" / "settings" / "production.py", "\nSECURE_HSTS_SECONDS = 0\n"))
    _commit_on(repo, "no-boot", "base", "A release whose WSGI app cannot import", lambda r: _append(
        r / "app" / "config" / "wsgi.py", "\nraise RuntimeError('this release cannot boot')\n"))
    _commit_on(repo, "bad-req", "base", "Pin a requirement that does not exist", lambda r: _append(
        r / "app" / "requirements.txt",
        "skinmenu-no-such-package==1.0 \\\n    --hash=sha256:" + "0" * 64 + "\n"))
    _commit_on(repo, "second", "base", "A second ordinary commit", lambda r: _append(
        r / "app" / "static" / "css" / "site.css", "\n/* second */\n"))
    _commit_on(repo, "third", "second", "A third ordinary commit", lambda r: _append(
        r / "app" / "static" / "css" / "site.css", "\n/* third */\n"))
    _commit_on(repo, "home-500", "base", "The home page answers 500 (it boots; /healthz is fine)", lambda r: _replace(
        r / "app" / "config" / "urls.py", "urlpatterns = [\n",
        "from django.http import HttpResponseServerError\n\n"
        "urlpatterns = [\n    path('', lambda request: HttpResponseServerError('broken home page')),\n"))
    _commit_on(repo, "home-500-later", "base", "The home page answers 500 from its second request on", lambda r: _replace(
        r / "app" / "config" / "urls.py", "urlpatterns = [\n",
        "from django.http import HttpResponseServerError\n\n_seen = []\n\n\n"
        "def _home_once(request):\n"
        "    from wagtail.views import serve\n"
        "    _seen.append(1)\n"
        "    return serve(request, '') if len(_seen) == 1 else HttpResponseServerError('broken later')\n\n\n"
        "urlpatterns = [\n    path('', _home_once),\n"))
    git(repo, "checkout", "-q", "main")
    return SourceRepo(repo)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Deployment:
    """One deploy root driven through the real `deployer` CLI. With service.strategy standby (the
    default, as in production) two gunicorns, blue and green, listen on unix sockets in
    deploy/run/, and a front door on `port` (scripts/local-service front, the stand-in for nginx)
    proxies each connection to deploy/live.sock. With restart, one gunicorn on `port`."""

    root: Path
    source: SourceRepo
    python: str
    uv_cache: Path
    port: int = field(default_factory=free_port)
    pg_database: str | None = None  # set by the pg_deployment fixture
    strategy: str = "standby"
    standby_seconds: float = 600

    def __post_init__(self) -> None:
        self.deploy_to = self.root / "deploy"
        if self.strategy == "standby":
            (self.deploy_to / "run").mkdir(parents=True, exist_ok=True)
            subprocess.run([sys.executable, str(LOCAL_SERVICE), "--root", str(self.deploy_to),
                            "--bind", f"127.0.0.1:{self.port}", "front"], check=True)
        self.env_file = self.root / "skinmenu.env"
        self.config_file = self.root / "releases.yml"
        self.env_file.write_text(
            f"DJANGO_SECRET_KEY={secrets.token_urlsafe(50)}\n"
            "DJANGO_ALLOWED_HOSTS=127.0.0.1,localhost\n"
            f"DJANGO_CSRF_TRUSTED_ORIGINS=http://127.0.0.1:{self.port}\n"
            f"WAGTAILADMIN_BASE_URL=http://127.0.0.1:{self.port}\n"
            "DJANGO_SECURE_SSL_REDIRECT=false\n"
        )
        self.env_file.chmod(0o600)
        self.write_config()

    def service_command(self, action: str) -> str:
        return (f"{sys.executable} {LOCAL_SERVICE} --root {self.deploy_to} --bind 127.0.0.1:{self.port} "
                f"--env-file {self.env_file} --workers 1 {action}")

    def colour_command(self, action: str) -> str:
        return (f"{sys.executable} {LOCAL_SERVICE} --root {self.deploy_to} --colour {{colour}} "
                f"--socket {self.deploy_to}/run/{{colour}}.sock --env-file {self.env_file} --workers 1 {action}")

    def service_config(self) -> dict:
        if self.strategy == "standby":
            return {"strategy": "standby", "standby_seconds": self.standby_seconds,
                    "start": self.colour_command("start"), "stop": self.colour_command("stop"),
                    "is_active": self.colour_command("status"), "socket": f"{self.deploy_to}/run/{{colour}}.sock"}
        return {"restart": self.service_command("restart"), "is_active": self.service_command("status")}

    def write_config(self, **overrides) -> None:
        config = {
            "app": "skinmenu",
            "repo": str(self.source.path),
            "deploy_to": str(self.deploy_to),
            "python": self.python,
            "keep_releases": 5,
            "django": {"project_dir": "app", "settings": "config.settings.production",
                       "requirements": "app/requirements.txt"},
            "env_file": str(self.env_file),
            "required_env": ["DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS",
                             "DJANGO_CSRF_TRUSTED_ORIGINS", "WAGTAILADMIN_BASE_URL"],
            "shared_dirs": ["media", "db"],
            "service": self.service_config(),
            "install": {"cache_dir": str(self.uv_cache)},
            "smoke": {"url": f"http://127.0.0.1:{self.port}", "check_static": False, "timeout": 15},
        }
        config.update(overrides)
        self.config_file.write_text(yaml.safe_dump(config, sort_keys=False))

    def deployer(self, *args: str, timeout: float = 600, input: str | None = None) -> subprocess.CompletedProcess:
        """Run the real CLI as the operator would; never raises on a non-zero exit."""
        env = {k: v for k, v in os.environ.items() if k not in ("DEPLOYER_CONFIG", "DEPLOYER_DEBUG")}
        return subprocess.run(
            [sys.executable, "-m", "deployer", "--config", str(self.config_file), *args],
            capture_output=True, text=True, timeout=timeout, env=env, input=input,
        )

    def ok(self, *args: str) -> subprocess.CompletedProcess:
        result = self.deployer(*args)
        assert result.returncode == 0, f"deployer {' '.join(args)} exited {result.returncode}\n{result.stderr}"
        return result

    def release(self, ref: str) -> str:
        return self.ok("release", ref).stdout.strip()

    def healthz(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=10) as resp:
            return json.loads(resp.read())

    def page(self, path: str = "/") -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as resp:
            return resp.read().decode()

    @property
    def current(self) -> str | None:
        link = self.deploy_to / "current"
        return Path(os.readlink(link)).name if link.is_symlink() else None

    @property
    def releases(self) -> set[str]:
        path = self.deploy_to / "releases"
        return {p.name for p in path.iterdir()} if path.is_dir() else set()

    @property
    def database(self) -> Path:
        return self.deploy_to / "shared" / "db" / "skinmenu.sqlite3"

    def history(self) -> list[dict]:
        path = self.deploy_to / "state" / "history.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def use_database_url(self, url: str) -> None:
        """Point the app at PostgreSQL: DATABASE_URL in the env file (docs/design.md §14)."""
        lines = [line for line in self.env_file.read_text().splitlines() if not line.startswith("DATABASE_URL=")]
        self.env_file.write_text("\n".join([*lines, f"DATABASE_URL={url}"]) + "\n")

    def stop(self) -> None:
        if not (self.deploy_to / "run").is_dir():
            return
        if self.strategy == "standby":
            for colour in ("blue", "green"):
                subprocess.run(self.colour_command("stop").replace("{colour}", colour).split(), capture_output=True)
            subprocess.run([sys.executable, str(LOCAL_SERVICE), "--root", str(self.deploy_to), "front-stop"],
                           capture_output=True)
        else:
            subprocess.run(self.service_command("stop").split(), capture_output=True)


@pytest.fixture(scope="session")
def uv_cache(tmp_path_factory, worker_id) -> Path:
    """One uv cache for the whole run: with xdist, beside the workers' own temp dirs (uv locks
    its cache, so workers may fill it at once), on the same filesystem so venvs hardlink."""
    if worker_id == "master":
        return tmp_path_factory.mktemp("uv-cache")
    shared = tmp_path_factory.getbasetemp().parent / "uv-cache"
    shared.mkdir(exist_ok=True)
    return shared


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory, source_repo, release_python, uv_cache) -> Path:
    """A real first deploy of `base` (migrating an empty database), kept as a template."""
    d = Deployment(tmp_path_factory.mktemp("first-deploy"), source_repo, release_python, uv_cache)
    try:
        result = d.ok("deploy", "base")
        assert "database backed up" not in result.stderr  # nothing to back up on a first deploy
        assert d.healthz()["release"] == source_repo.sha("base")
    finally:
        d.stop()
    template = tmp_path_factory.mktemp("db-template") / "skinmenu.sqlite3"
    src, dst = sqlite3.connect(d.database), sqlite3.connect(template)
    src.backup(dst)
    src.close()
    dst.close()
    return template


def pytest_configure(config):
    config.addinivalue_line("markers", "strategy(name): the service.strategy of the `deployment` fixture")


@pytest.fixture
def deployment(request, tmp_path, source_repo, release_python, uv_cache, migrated_db):
    """A deploy root whose shared database already has `base`'s migrations applied. Standby, as
    production runs, unless the test is marked @pytest.mark.strategy("restart")."""
    marker = request.node.get_closest_marker("strategy")
    d = Deployment(tmp_path, source_repo, release_python, uv_cache, strategy=marker.args[0] if marker else "standby")
    d.database.parent.mkdir(parents=True)
    shutil.copy(migrated_db, d.database)
    yield d
    d.stop()


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server for the session (tests/integration/postgres_server.py)."""
    reason = postgres_server.missing_reason()
    if reason:
        if _ci():
            pytest.fail(f"the PostgreSQL tests must run under CI=true but cannot: {reason}", pytrace=False)
        pytest.skip(f"PostgreSQL tests not run: {reason}")
    server = postgres_server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_template(tmp_path_factory, postgres, source_repo, release_python, uv_cache) -> str:
    """A real first deploy of `base` on an empty PostgreSQL database, kept as a template."""
    d = Deployment(tmp_path_factory.mktemp("pg-first-deploy"), source_repo, release_python, uv_cache)
    name = postgres.create_database("skinmenu_template")
    d.use_database_url(postgres.url(name))
    try:
        result = d.ok("deploy", "base")
        assert "database backed up" not in result.stderr  # nothing to back up on a first deploy
        assert d.healthz() == {"status": "ok", "release": source_repo.sha("base"), "database": "ok"}
    finally:
        d.stop()
    return name


@pytest.fixture
def pg_deployment(request, tmp_path, source_repo, release_python, uv_cache, postgres, pg_template):
    """A deploy root whose app uses its own PostgreSQL database, with `base`'s migrations applied."""
    d = Deployment(tmp_path, source_repo, release_python, uv_cache)
    d.pg_database = postgres.clone_database(pg_template, f"t_{secrets.token_hex(6)}")
    d.use_database_url(postgres.url(d.pg_database))
    yield d
    d.stop()


@pytest.fixture
def wait_until():
    def wait(predicate, timeout: float = 30, interval: float = 0.05):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(interval)
        return False
    return wait
