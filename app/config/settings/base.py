"""Settings shared by every environment: safe on their own, complete for nothing.

DEBUG is off and SECRET_KEY is a placeholder that the production layer refuses. dev.py and
production.py build on this module and then load local.py (the environment) last.

Paths (docs/design.md §1, §10). In a deployed release this file lives at
/home/deploy/releases/<sha>/app/config/settings/base.py, so

    APP_DIR       /home/deploy/releases/<sha>/app     (where manage.py is)
    RELEASE_ROOT  /home/deploy/releases/<sha>         (REVISION, staticfiles/,
                                                       db -> shared/db, media -> shared/media)

`resolve()` follows the `current` symlink once, at import time, so a running process keeps
using the release it was started from. In a checkout RELEASE_ROOT is the repository root.
"""

from pathlib import Path

APP_DIR = Path(__file__).resolve().parent.parent.parent
RELEASE_ROOT = APP_DIR.parent

# The placeholder is refused by local.py under production settings and flagged by
# `check --deploy` (security.W009) everywhere else.
PLACEHOLDER_SECRET_KEY = "django-insecure-placeholder-set-DJANGO_SECRET_KEY"
SECRET_KEY = PLACEHOLDER_SECRET_KEY
DEBUG = False
ALLOWED_HOSTS: list[str] = []
CSRF_TRUSTED_ORIGINS: list[str] = []

INSTALLED_APPS = [
    "home",
    "treatments",
    "search",
    "wagtail.contrib.forms",
    "wagtail.contrib.redirects",
    "wagtail.embeds",
    "wagtail.sites",
    "wagtail.users",
    "wagtail.snippets",
    "wagtail.documents",
    "wagtail.images",
    "wagtail.search",
    "wagtail.admin",
    "wagtail",
    "modelcluster",
    "taggit",
    "django_filters",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
]

MIDDLEWARE = [
    # Outermost: HEAD answers get no body (gunicorn warns about every one that has one).
    "config.middleware.head_without_body",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "wagtail.contrib.redirects.middleware.RedirectMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [APP_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.debug",
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# SQLite (docs/design.md §10): WAL so readers never block the writer, synchronous=NORMAL (safe with
# WAL, far fewer fsyncs), a 20 s busy timeout instead of "database is locked" under
# concurrent workers, and IMMEDIATE transactions so a transaction takes the write lock when
# it begins instead of failing when it upgrades from read to write (Django 5.1+ OPTIONS).
# The file lives in <release>/db/, which the deployer links to shared/db/.
SQLITE_OPTIONS = {
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
}
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": RELEASE_ROOT / "db" / "skinmenu.sqlite3",
        "OPTIONS": dict(SQLITE_OPTIONS),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# Static files: collected into <release>/staticfiles (always; nginx aliases /static/ to
# current/staticfiles/). Media: <release>/media -> shared/media unless DJANGO_MEDIA_ROOT.
STATIC_URL = "/static/"
STATIC_ROOT = RELEASE_ROOT / "staticfiles"
STATICFILES_DIRS = [APP_DIR / "static"]
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
]
MEDIA_URL = "/media/"
MEDIA_ROOT = RELEASE_ROOT / "media"

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Wagtail's page editor can exceed Django's default of 1000 fields per form.
DATA_UPLOAD_MAX_NUMBER_FIELDS = 10_000

WAGTAIL_SITE_NAME = "Skinmenu"
WAGTAILSEARCH_BACKENDS = {
    "default": {"BACKEND": "wagtail.search.backends.database"},
}
# Overridden from the environment by local.py (required under production settings).
WAGTAILADMIN_BASE_URL = "http://localhost:8000"
WAGTAILDOCS_EXTENSIONS = ["csv", "docx", "key", "odt", "pdf", "pptx", "rtf", "txt", "xlsx", "zip"]
WAGTAILDOCS_MAX_UPLOAD_SIZE = 10 * 1024 * 1024
# Documents are always downloaded through Wagtail's view (/documents/<id>/<filename>), which
# enforces collection privacy and then streams the file. Never "redirect" or "direct": both hand
# out /media/documents/<name>, which nginx refuses (an `internal` location), and which would
# otherwise serve a private document to anyone with the link. Explicit, because Wagtail picks
# the default by storage backend. See docs/server-guide.md, "Documents and privacy".
WAGTAILDOCS_SERVE_METHOD = "serve_view"

# The admin is private: nothing in it may reach a third party. No Gravatar (a request to
# gravatar.com with a hash of the editor's e-mail address from every admin page; Wagtail's
# own default avatar instead) and no check for a new Wagtail release from the dashboard (a
# request to releases.wagtail.io from the superuser's browser). Upgrades come from
# app/requirements.in, on purpose.
WAGTAIL_GRAVATAR_PROVIDER_URL = None
WAGTAIL_ENABLE_UPDATE_CHECK = False

# The REVISION file the deployer writes at the release root; /healthz reports it.
REVISION_FILE = RELEASE_ROOT / "REVISION"
