"""Production settings: the server behind nginx, which terminates TLS and serves /static/
and /media/ itself (Django never serves static files here).

Must pass `manage.py check --deploy --fail-level WARNING` (the deployer runs it on every
build). Secrets and hosts come from the environment through local.py, loaded last, which
requires DJANGO_SECRET_KEY, DJANGO_ALLOWED_HOSTS, DJANGO_CSRF_TRUSTED_ORIGINS and
WAGTAILADMIN_BASE_URL here.
"""

from .base import *  # noqa: F403

DEBUG = False

# Hashed file names (site.3f2a….css) + staticfiles.json; nginx caches them far-future.
# manifest_strict stays on: a template naming a missing static file is an error, not a 404.
STORAGES = {
    **STORAGES,  # noqa: F405
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"},
}

# --- HTTPS behind nginx ----------------------------------------------------------------------
# nginx sets X-Forwarded-Proto itself (it never passes the client's through), so Django can
# trust it to know that the original request was https.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# DJANGO_SECURE_SSL_REDIRECT=false (local.py) turns this off for a plain-HTTP local deploy.
SECURE_SSL_REDIRECT = True
# /healthz must answer the deployer's and monitors' plain-HTTP probes (e.g. straight to the
# gunicorn socket) without a redirect. Patterns match the path without its leading slash.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]

SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True

# HSTS: one year, subdomains included. SECURE_HSTS_PRELOAD stays False on purpose: the
# `preload` directive is the domain owner's consent to be hard-coded into browsers' preload
# lists, which outlives any config change (removal takes months) and binds every subdomain to
# HTTPS forever. That is a decision about the domain, made once by its owner, not a default
# of the app. Its deploy warning (security.W021) is therefore silenced below. To opt in: set
# this True, deploy, then submit the domain at https://hstspreload.org/.
SECURE_HSTS_SECONDS = 31_536_000
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = False
SILENCED_SYSTEM_CHECKS = ["security.W021"]

SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
# DENY everywhere; Wagtail's live preview marks its own views SAMEORIGIN.
X_FRAME_OPTIONS = "DENY"

# --- logging: stderr, which systemd sends to the journal --------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        # journald adds the timestamp and unit; keep the line short.
        "plain": {"format": "%(levelname)s %(name)s: %(message)s"},
    },
    "filters": {
        "one_line_warning": {"()": "config.log_filters.OneLineWarning"},
    },
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "formatter": "plain"},
        "stderr_one_line": {"class": "logging.StreamHandler", "formatter": "plain",
                            "filters": ["one_line_warning"]},
    },
    "root": {"handlers": ["stderr"], "level": "WARNING"},
    "loggers": {
        "django": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        # 4xx noise (bots) stays out of the journal; 5xx is logged by django.request at ERROR.
        "django.request": {"handlers": ["stderr"], "level": "ERROR", "propagate": False},
        "django.security": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
        # A Host outside ALLOWED_HOSTS: one WARNING line naming it, not an ERROR with a
        # traceback (nginx drops unknown hosts first; what still arrives is a config mistake).
        "django.security.DisallowedHost": {"handlers": ["stderr_one_line"], "level": "WARNING",
                                           "propagate": False},
        "wagtail": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
    },
}

# --- environment, last ------------------------------------------------------------------------
REQUIRE_ENV = True
from .local import *  # noqa: E402, F403
