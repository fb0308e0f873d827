"""The environment layer, loaded last by dev.py and production.py (`from .local import *`).

Reads secrets, hosts and paths from the process environment. On the server systemd and the
deployer load them from the env file /etc/skinmenu/skinmenu.env (mode 0640, never in git).

    DJANGO_SECRET_KEY            required under production; dev has a default
    DJANGO_ALLOWED_HOSTS         required under production; comma-separated
    DJANGO_CSRF_TRUSTED_ORIGINS  required under production; comma-separated, with scheme
    WAGTAILADMIN_BASE_URL        required under production; e.g. https://skinmenu.example.com
    DJANGO_SECURE_SSL_REDIRECT   optional, default true; false/0/no for a plain-HTTP local deploy
    DATABASE_URL                 optional; e.g. postgres://skinmenu:PASSWORD@db.internal:5432/skinmenu
                                 (the password percent-encoded). Unset: SQLite, as below
    DJANGO_DB_PATH               optional SQLite file (default <release>/db/skinmenu.sqlite3);
                                 not together with DATABASE_URL
    DJANGO_MEDIA_ROOT            optional media directory (default <release>/media)

The including module decides whether the four are required by setting REQUIRE_ENV = True
before `from .local import *` (production does). A missing required variable is one
ImproperlyConfigured naming it. Secret values are never logged, printed or put in errors.

Django evaluates exactly one settings module per process, so this module is evaluated once,
on behalf of that settings module.
"""

import os
import sys
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from .base import PLACEHOLDER_SECRET_KEY

ENV_FILE_HINT = "/etc/skinmenu/skinmenu.env"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _including_settings() -> dict:
    """The globals of the settings module executing `from .local import *` (dev or production).

    Walks up the import's call stack to the first frame that belongs to a sibling settings
    module. If there is none (someone imported local.py directly), the result is empty and
    REQUIRE_ENV defaults to True below: fail closed.
    """
    package = __name__.rpartition(".")[0]
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name.startswith(package + ".") and name != __name__:
            return frame.f_globals
        frame = frame.f_back
    return {}


_including = _including_settings()
_required = bool(_including.get("REQUIRE_ENV", True))


def _missing(name: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"{name} is not set: put it in the env file ({ENV_FILE_HINT})")


def _get(name: str, *, required: bool) -> str | None:
    """The stripped value of `name`, None when unset or blank; raises if required and absent."""
    value = os.environ.get(name, "").strip()
    if value:
        return value
    if required:
        raise _missing(name)
    return None


def _get_list(name: str, *, required: bool) -> list[str] | None:
    raw = _get(name, required=required)
    if raw is None:
        return None
    items = [item.strip() for item in raw.split(",") if item.strip()]
    if not items and required:
        raise _missing(name)
    return items or None


def _get_bool(name: str) -> bool | None:
    raw = _get(name, required=False)
    if raw is None:
        return None
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false (got {raw!r})")


# --- secrets and hosts ---------------------------------------------------------------------

_secret_key = _get("DJANGO_SECRET_KEY", required=_required)
if _secret_key is not None:
    if _required and _secret_key == PLACEHOLDER_SECRET_KEY:
        raise ImproperlyConfigured(
            f"DJANGO_SECRET_KEY is the placeholder from base.py: put a real key in the env file "
            f"({ENV_FILE_HINT})"
        )
    SECRET_KEY = _secret_key
elif _required or _including.get("SECRET_KEY", PLACEHOLDER_SECRET_KEY) == PLACEHOLDER_SECRET_KEY:
    # Fail closed: nothing may run with the placeholder unless a layer chose a key.
    raise _missing("DJANGO_SECRET_KEY")

_hosts = _get_list("DJANGO_ALLOWED_HOSTS", required=_required)
if _hosts is not None:
    ALLOWED_HOSTS = _hosts

_origins = _get_list("DJANGO_CSRF_TRUSTED_ORIGINS", required=_required)
if _origins is not None:
    for _origin in _origins:
        if not _origin.startswith(("https://", "http://")):
            raise ImproperlyConfigured(
                f"DJANGO_CSRF_TRUSTED_ORIGINS entries need a scheme, e.g. https://{_origin} "
                f"(got {_origin!r})"
            )
    CSRF_TRUSTED_ORIGINS = _origins

_base_url = _get("WAGTAILADMIN_BASE_URL", required=_required)
if _base_url is not None:
    if not _base_url.startswith(("https://", "http://")):
        raise ImproperlyConfigured(
            f"WAGTAILADMIN_BASE_URL needs a scheme, e.g. https://{_base_url} (got {_base_url!r})"
        )
    WAGTAILADMIN_BASE_URL = _base_url.rstrip("/")

# --- transport -----------------------------------------------------------------------------

_ssl_redirect = _get_bool("DJANGO_SECURE_SSL_REDIRECT")
if _ssl_redirect is not None:
    SECURE_SSL_REDIRECT = _ssl_redirect
    if not _ssl_redirect and _including.get("SECURE_SSL_REDIRECT"):
        # The operator turned the redirect off on purpose (a plain-HTTP local deploy such as
        # the demo); the deploy check warning about it (security.W008) is then the decision
        # itself, not a finding, and would fail `check --deploy --fail-level WARNING`.
        SILENCED_SYSTEM_CHECKS = [*_including.get("SILENCED_SYSTEM_CHECKS", []), "security.W008"]

# --- database (docs/design.md §10, §14) ------------------------------------------------------

# Persistent connections: a gunicorn sync worker serves one request at a time, so each worker
# keeps at most one connection; reusing it for 60 s saves the TCP + SCRAM handshake (several ms)
# on every request, and at most workers x servers (x2 during a standby window) connections stay
# open. CONN_HEALTH_CHECKS pings a reused connection before a request, so a PostgreSQL restart
# or a dropped idle connection costs one reconnect, never a 500.
_CONN_MAX_AGE = 60

_database_url = _get("DATABASE_URL", required=False)
_db_path = _get("DJANGO_DB_PATH", required=False)
if _database_url is not None:
    if _db_path is not None:
        raise ImproperlyConfigured("DATABASE_URL and DJANGO_DB_PATH are both set: keep one")
    import dj_database_url

    try:
        _database = dj_database_url.parse(_database_url, conn_max_age=_CONN_MAX_AGE, conn_health_checks=True)
    except Exception as exc:  # the parser's errors quote the URL, password included
        raise ImproperlyConfigured(
            f"DATABASE_URL cannot be parsed ({type(exc).__name__}); expected e.g. "
            "postgres://USER:PASSWORD@HOST:5432/NAME"
        ) from None
    if not _database.get("ENGINE") or not _database.get("NAME"):
        raise ImproperlyConfigured("DATABASE_URL names no database engine or database name")
    DATABASES = {"default": _database}
elif _db_path is not None:
    _databases = _including.get("DATABASES")
    if not _databases:
        raise ImproperlyConfigured("DJANGO_DB_PATH is set but no DATABASES to apply it to")
    DATABASES = {
        **_databases,
        "default": {**_databases["default"], "NAME": Path(_db_path).expanduser()},
    }

# --- paths ---------------------------------------------------------------------------------

_media_root = _get("DJANGO_MEDIA_ROOT", required=False)
if _media_root is not None:
    MEDIA_ROOT = Path(_media_root).expanduser()

# Only the settings assigned above leave this module.
__all__ = [
    _name
    for _name in (
        "SECRET_KEY",
        "ALLOWED_HOSTS",
        "CSRF_TRUSTED_ORIGINS",
        "WAGTAILADMIN_BASE_URL",
        "SECURE_SSL_REDIRECT",
        "SILENCED_SYSTEM_CHECKS",
        "DATABASES",
        "MEDIA_ROOT",
    )
    if _name in globals()
]
