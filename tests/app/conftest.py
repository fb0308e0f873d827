"""Fixtures for the Skinmenu site's own tests (app/).

In-process tests run under the dev settings (setup.cfg: DJANGO_SETTINGS_MODULE) with
pytest-django's test database. Anything about production settings runs in a subprocess with
the test venv's python and an environment built from nothing, the way the deployer and
systemd run the app: a settings module is evaluated once per process, and the developer's
own shell variables must not leak in.
"""

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
APP_DIR = REPO_ROOT / "app"
DOMAIN = "skinmenu.example.com"
REQUIRED_ENV = (
    "DJANGO_SECRET_KEY",
    "DJANGO_ALLOWED_HOSTS",
    "DJANGO_CSRF_TRUSTED_ORIGINS",
    "WAGTAILADMIN_BASE_URL",
)


def clean_env(**extra: str) -> dict[str, str]:
    """A minimal process environment: no DJANGO_* from the caller, plus `extra`."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.update(extra)
    return env


def make_prod_env(tmp_path: Path) -> dict[str, str]:
    """The realistic env file of the production server, as a process environment."""
    db_dir = tmp_path / "shared-db"
    db_dir.mkdir(exist_ok=True)
    return clean_env(
        DJANGO_SETTINGS_MODULE="config.settings.production",
        # What the operator is told to generate: a long random key.
        DJANGO_SECRET_KEY=secrets.token_urlsafe(64),
        DJANGO_ALLOWED_HOSTS=DOMAIN,
        DJANGO_CSRF_TRUSTED_ORIGINS=f"https://{DOMAIN}",
        WAGTAILADMIN_BASE_URL=f"https://{DOMAIN}",
        DJANGO_DB_PATH=str(db_dir / "skinmenu.sqlite3"),
        DJANGO_MEDIA_ROOT=str(tmp_path / "shared-media"),
        HOME=str(tmp_path),
    )


@pytest.fixture
def prod_env(tmp_path) -> dict[str, str]:
    return make_prod_env(tmp_path)


def run_python(
    args: list[str], env: dict[str, str], cwd: Path = APP_DIR, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run the test venv's python (`sys.executable`) with `args` in `cwd`."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_manage(
    *args: str, env: dict[str, str], app_dir: Path = APP_DIR, timeout: float = 120
) -> subprocess.CompletedProcess:
    return run_python(["manage.py", *args], env=env, cwd=app_dir, timeout=timeout)


RELEASE_SHA = "3f2a9c1e5b7d4a6f8e0c2b4d6f8a0c2e4b6d8f0a"


def copy_release(root: Path) -> Path:
    """A release directory like the deployer builds: <root>/app is a copy of the app tree.

    STATIC_ROOT and the default db/ and media/ are fixed relative to the release root, so
    anything that writes there runs against this copy, never the repository.
    """
    shutil.copytree(
        APP_DIR,
        root / "app",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.sqlite3*"),
    )
    return root


@pytest.fixture
def release_root(tmp_path) -> Path:
    """A fresh copy of the app as a release, nothing built yet."""
    return copy_release(tmp_path / "release")


@pytest.fixture(scope="session")
def built_release(tmp_path_factory) -> Path:
    """A release as the deployer leaves it, activated: REVISION written, static files
    collected with the production settings (ManifestStaticFilesStorage), and migrations
    applied to the database at its default place, <release>/db/skinmenu.sqlite3 (where the
    deployer links shared/db). Built once per session; tests only read from it."""
    root = copy_release(tmp_path_factory.mktemp("built") / "release")
    (root / "REVISION").write_text(RELEASE_SHA + "\n")
    (root / "db").mkdir()
    env = without_path_overrides(make_prod_env(tmp_path_factory.mktemp("built-env")))
    for command in (["collectstatic", "--noinput"], ["migrate", "--noinput"]):
        result = run_manage(*command, env=env, app_dir=root / "app")
        assert result.returncode == 0, result.stderr
    assert (root / "db" / "skinmenu.sqlite3").is_file()
    return root


def without_path_overrides(env: dict[str, str]) -> dict[str, str]:
    """`env` without the path overrides: the release's own db/ and media/ are used."""
    return {k: v for k, v in env.items() if k not in ("DJANGO_DB_PATH", "DJANGO_MEDIA_ROOT")}


@pytest.fixture
def release_env():
    """`release_env(env)`: `env` minus DJANGO_DB_PATH/DJANGO_MEDIA_ROOT."""
    return without_path_overrides


@pytest.fixture
def manage():
    """`manage(*args, env=..., app_dir=...)`: run app/manage.py in a subprocess."""
    return run_manage


@pytest.fixture
def python():
    """`python(args, env=..., cwd=...)`: run the test venv's python in a subprocess."""
    return run_python


@pytest.fixture
def base_env():
    """`base_env(**extra)`: a minimal environment without the caller's DJANGO_* variables."""
    return clean_env
