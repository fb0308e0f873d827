"""Settings, as the operator meets them on the server.

The env file is missing a variable: the site refuses to start and says which one, without
printing any secret. The env file is complete: `check --deploy --fail-level WARNING` (what
the deployer runs on every build) is clean, and the migrations match the models. The dev
settings need no environment at all.
"""

import json
import textwrap

import pytest

REQUIRED = (
    "DJANGO_SECRET_KEY",
    "DJANGO_ALLOWED_HOSTS",
    "DJANGO_CSRF_TRUSTED_ORIGINS",
    "WAGTAILADMIN_BASE_URL",
)
LOAD_SETTINGS = ["-c", "from django.conf import settings; settings.INSTALLED_APPS"]


@pytest.mark.parametrize("missing", REQUIRED)
def test_production_refuses_to_load_without_a_required_variable(missing, python, prod_env):
    env = {k: v for k, v in prod_env.items() if k != missing}
    result = python(LOAD_SETTINGS, env=env)
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line == (
        "django.core.exceptions.ImproperlyConfigured: "
        f"{missing} is not set: put it in the env file (/etc/skinmenu/skinmenu.env)"
    )
    # The secret never appears, whatever went wrong.
    if missing != "DJANGO_SECRET_KEY":
        assert prod_env["DJANGO_SECRET_KEY"] not in result.stderr + result.stdout


def test_a_blank_required_variable_counts_as_missing(python, prod_env):
    result = python(LOAD_SETTINGS, env={**prod_env, "DJANGO_ALLOWED_HOSTS": " , "})
    assert result.returncode != 0
    assert "DJANGO_ALLOWED_HOSTS is not set" in result.stderr


def test_manage_py_check_names_the_missing_secret_key(manage, prod_env):
    env = {k: v for k, v in prod_env.items() if k != "DJANGO_SECRET_KEY"}
    result = manage("check", env=env)
    assert result.returncode != 0
    assert "ImproperlyConfigured: DJANGO_SECRET_KEY is not set" in result.stderr


def test_production_refuses_the_placeholder_key(python, prod_env):
    from config.settings.base import PLACEHOLDER_SECRET_KEY

    result = python(LOAD_SETTINGS, env={**prod_env, "DJANGO_SECRET_KEY": PLACEHOLDER_SECRET_KEY})
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY is the placeholder" in result.stderr


def test_csrf_origins_need_a_scheme(python, prod_env):
    result = python(
        LOAD_SETTINGS, env={**prod_env, "DJANGO_CSRF_TRUSTED_ORIGINS": "skinmenu.example.com"}
    )
    assert result.returncode != 0
    assert "DJANGO_CSRF_TRUSTED_ORIGINS entries need a scheme" in result.stderr


def test_admin_base_url_needs_a_scheme(python, prod_env):
    env = {**prod_env, "WAGTAILADMIN_BASE_URL": "skinmenu.example.com"}
    result = python(LOAD_SETTINGS, env=env)
    assert result.returncode != 0
    assert "WAGTAILADMIN_BASE_URL needs a scheme" in result.stderr


def test_ssl_redirect_flag_must_be_a_boolean(python, prod_env):
    result = python(LOAD_SETTINGS, env={**prod_env, "DJANGO_SECURE_SSL_REDIRECT": "maybe"})
    assert result.returncode != 0
    assert "DJANGO_SECURE_SSL_REDIRECT must be true or false" in result.stderr


def test_check_deploy_is_clean_with_a_realistic_environment(manage, prod_env):
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=prod_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    assert "WARNINGS" not in result.stdout + result.stderr


def test_check_deploy_is_clean_for_a_plain_http_local_deploy(manage, prod_env):
    env = {**prod_env, "DJANGO_SECURE_SSL_REDIRECT": "false"}
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_deploy_catches_a_weak_secret_key(manage, prod_env):
    # The check the deployer relies on really fails: a short key is a warning, and
    # --fail-level WARNING turns it into a failed build.
    env = {**prod_env, "DJANGO_SECRET_KEY": "too-short"}
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode != 0
    assert "security.W009" in result.stderr + result.stdout
    assert "too-short" not in result.stderr + result.stdout


def test_migrations_match_the_models(manage, prod_env):
    result = manage("makemigrations", "--check", "--dry-run", env=prod_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No changes detected" in result.stdout


DUMP = textwrap.dedent(
    """
    import json
    from django.conf import settings
    from django.db import connection
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        journal_mode = cursor.fetchone()[0]
        cursor.execute("PRAGMA synchronous")
        synchronous = cursor.fetchone()[0]
        cursor.execute("PRAGMA busy_timeout")
        busy_timeout = cursor.fetchone()[0]
    db = settings.DATABASES["default"]
    print(json.dumps({
        "DEBUG": settings.DEBUG,
        "APP_DIR": str(settings.APP_DIR),
        "RELEASE_ROOT": str(settings.RELEASE_ROOT),
        "STATIC_ROOT": str(settings.STATIC_ROOT),
        "STATIC_URL": settings.STATIC_URL,
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "MEDIA_URL": settings.MEDIA_URL,
        "DB_NAME": str(db["NAME"]),
        "DB_OPTIONS": db["OPTIONS"],
        "STATICFILES": settings.STORAGES["staticfiles"]["BACKEND"],
        "ALLOWED_HOSTS": settings.ALLOWED_HOSTS,
        "CSRF_TRUSTED_ORIGINS": settings.CSRF_TRUSTED_ORIGINS,
        "WAGTAILADMIN_BASE_URL": settings.WAGTAILADMIN_BASE_URL,
        "SECURE_SSL_REDIRECT": settings.SECURE_SSL_REDIRECT,
        "SECURE_PROXY_SSL_HEADER": list(settings.SECURE_PROXY_SSL_HEADER or ()),
        "SESSION_COOKIE_SECURE": settings.SESSION_COOKIE_SECURE,
        "CSRF_COOKIE_SECURE": settings.CSRF_COOKIE_SECURE,
        "SECURE_HSTS_SECONDS": settings.SECURE_HSTS_SECONDS,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": settings.SECURE_HSTS_INCLUDE_SUBDOMAINS,
        "WAGTAILDOCS_SERVE_METHOD": getattr(settings, "WAGTAILDOCS_SERVE_METHOD", None),
        "journal_mode": journal_mode,
        "synchronous": synchronous,
        "busy_timeout": busy_timeout,
    }))
    """
)


def dump_settings(python, env, cwd):
    result = python(["-c", DUMP], env=env, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_production_paths_and_hardening_in_a_release(
    python, release_root, prod_env, release_env
):
    (release_root / "db").mkdir()  # the deployer's link to shared/db
    seen = dump_settings(python, release_env(prod_env), cwd=release_root / "app")
    root = str(release_root.resolve())
    assert seen["RELEASE_ROOT"] == root
    assert seen["APP_DIR"] == f"{root}/app"
    assert seen["STATIC_ROOT"] == f"{root}/staticfiles"
    assert seen["DB_NAME"] == f"{root}/db/skinmenu.sqlite3"
    assert seen["MEDIA_ROOT"] == f"{root}/media"
    assert (seen["STATIC_URL"], seen["MEDIA_URL"]) == ("/static/", "/media/")
    assert seen["DEBUG"] is False
    assert seen["STATICFILES"] == (
        "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"
    )
    assert seen["ALLOWED_HOSTS"] == ["skinmenu.example.com"]
    assert seen["CSRF_TRUSTED_ORIGINS"] == ["https://skinmenu.example.com"]
    assert seen["WAGTAILADMIN_BASE_URL"] == "https://skinmenu.example.com"
    assert seen["SECURE_SSL_REDIRECT"] is True
    assert seen["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert seen["SESSION_COOKIE_SECURE"] and seen["CSRF_COOKIE_SECURE"]
    assert seen["SECURE_HSTS_SECONDS"] == 31_536_000
    assert seen["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is True
    # nginx refuses /media/documents/: documents must be streamed by Wagtail's view.
    assert seen["WAGTAILDOCS_SERVE_METHOD"] == "serve_view"
    # SQLite: WAL, synchronous=NORMAL (1), a 20 s busy timeout, IMMEDIATE transactions.
    assert seen["DB_OPTIONS"]["transaction_mode"] == "IMMEDIATE"
    assert (seen["journal_mode"], seen["synchronous"], seen["busy_timeout"]) == ("wal", 1, 20000)
    assert (release_root / "db" / "skinmenu.sqlite3").is_file()


def test_path_overrides_and_lists_from_the_environment(python, release_root, prod_env, tmp_path):
    env = {
        **prod_env,
        "DJANGO_ALLOWED_HOSTS": " skinmenu.example.com , www.skinmenu.example.com ,",
        "DJANGO_CSRF_TRUSTED_ORIGINS": "https://skinmenu.example.com,https://www.skinmenu.example.com",
        "DJANGO_SECURE_SSL_REDIRECT": "no",
    }
    seen = dump_settings(python, env, cwd=release_root / "app")
    assert seen["DB_NAME"] == prod_env["DJANGO_DB_PATH"]
    assert seen["MEDIA_ROOT"] == prod_env["DJANGO_MEDIA_ROOT"]
    # STATIC_ROOT is not configurable: nginx serves <release>/staticfiles.
    assert seen["STATIC_ROOT"] == f"{release_root.resolve()}/staticfiles"
    assert seen["ALLOWED_HOSTS"] == ["skinmenu.example.com", "www.skinmenu.example.com"]
    assert len(seen["CSRF_TRUSTED_ORIGINS"]) == 2
    assert seen["SECURE_SSL_REDIRECT"] is False


def test_dev_settings_work_with_no_environment_at_all(manage, release_root, base_env):
    env = base_env()  # PATH and LANG only: no DJANGO_SETTINGS_MODULE, no secrets
    result = manage("check", env=env, app_dir=release_root / "app")
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout
    # dev creates the database directory it needs.
    assert (release_root / "db").is_dir()


def test_dev_settings_in_this_test_run(settings):
    # (DEBUG is forced off by the test runner, whatever dev.py says.)
    assert settings.SETTINGS_MODULE == "config.settings.dev"
    assert settings.SECRET_KEY.startswith("django-insecure-dev-only-")
    assert settings.DATABASES["default"]["OPTIONS"] == {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    assert settings.STATICFILES_DIRS == [settings.APP_DIR / "static"]


def without_db_path(env: dict) -> dict:
    return {k: v for k, v in env.items() if k != "DJANGO_DB_PATH"}


DATABASE_SETTINGS = ["-c", textwrap.dedent(
    """
    import json
    from django.conf import settings
    db = settings.DATABASES["default"]
    print(json.dumps({k: db.get(k) for k in ("ENGINE", "NAME", "USER", "PASSWORD", "HOST", "PORT",
                                             "CONN_MAX_AGE", "CONN_HEALTH_CHECKS", "OPTIONS")}, default=str))
    """
)]


def test_database_url_selects_postgresql_with_persistent_checked_connections(python, prod_env):
    url = "postgres://skinmenu:p%40ss%3Aw%2Frd@db.internal:6432/skinmenu?sslmode=require"
    result = python(DATABASE_SETTINGS, env={**without_db_path(prod_env), "DATABASE_URL": url})
    assert result.returncode == 0, result.stderr
    db = json.loads(result.stdout.strip().splitlines()[-1])
    assert db == {"ENGINE": "django.db.backends.postgresql", "NAME": "skinmenu", "USER": "skinmenu",
                  "PASSWORD": "p@ss:w/rd", "HOST": "db.internal", "PORT": 6432, "CONN_MAX_AGE": 60,
                  "CONN_HEALTH_CHECKS": True, "OPTIONS": {"sslmode": "require"}}


def test_without_database_url_the_site_stays_on_sqlite(python, prod_env):
    result = python(DATABASE_SETTINGS, env=prod_env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["ENGINE"] == "django.db.backends.sqlite3"


@pytest.mark.parametrize("url, message", [
    ("postgres://skinmenu:hunter2-secret@db.internal:notaport/skinmenu", "DATABASE_URL cannot be parsed"),
    ("nosuchengine://skinmenu:hunter2-secret@db.internal/skinmenu", "DATABASE_URL cannot be parsed"),
])
def test_a_broken_database_url_is_named_without_its_password(python, prod_env, url, message):
    result = python(DATABASE_SETTINGS, env={**without_db_path(prod_env), "DATABASE_URL": url})
    assert result.returncode != 0
    assert message in result.stderr
    assert "hunter2-secret" not in result.stderr + result.stdout


def test_database_url_and_a_sqlite_path_together_are_refused(python, prod_env):
    env = {**prod_env, "DATABASE_URL": "postgres://u:p@h/skinmenu", "DJANGO_DB_PATH": "/srv/db.sqlite3"}
    result = python(DATABASE_SETTINGS, env=env)
    assert result.returncode != 0
    assert "DATABASE_URL and DJANGO_DB_PATH are both set" in result.stderr


def test_check_deploy_is_clean_under_postgresql(manage, prod_env):
    env = {**without_db_path(prod_env), "DATABASE_URL": "postgres://skinmenu:secret@127.0.0.1:1/skinmenu"}
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
