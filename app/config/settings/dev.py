"""Settings for local work: DEBUG on, runs with no environment variables at all.

    cd app && python manage.py migrate && python manage.py runserver

Any variable local.py knows (DJANGO_DB_PATH, DJANGO_SECRET_KEY, …) still overrides.
"""

from pathlib import Path

from .base import *  # noqa: F403

DEBUG = True
# Dev only, never used by production (production requires DJANGO_SECRET_KEY from the env file).
SECRET_KEY = "django-insecure-dev-only-5kz$0v!q8c@x7m1r^w3e2t9y6u4i0o-p"
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]"]
CSRF_TRUSTED_ORIGINS = ["http://localhost:8000", "http://127.0.0.1:8000"]
WAGTAILADMIN_BASE_URL = "http://localhost:8000"
# Outgoing mail is printed, never sent.
EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"

REQUIRE_ENV = False
from .local import *  # noqa: E402, F403

# The SQLite file's directory (<repo>/db by default) may not exist in a fresh checkout.
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):  # noqa: F405
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)  # noqa: F405
