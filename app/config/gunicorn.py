"""gunicorn settings for the Skinmenu site.

Run from the release's app/ directory:

    python -m gunicorn -c config/gunicorn.py config.wsgi

The listening socket is not configured here: systemd socket activation hands it over
(LISTEN_FDS, skinmenu.socket -> /run/skinmenu/skinmenu.sock), and local runs and tests pass
`--bind`. Settings come from DJANGO_SETTINGS_MODULE (config.wsgi defaults to production).
"""

import os

wsgi_app = "config.wsgi:application"


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a whole number (got {raw!r})") from None
    if value < 1:
        raise SystemExit(f"{name} must be at least 1 (got {value})")
    return value


# Sync workers: SQLite, short requests. Two per core is plenty for this site.
workers = _int_env("GUNICORN_WORKERS", 2)
worker_class = "sync"

# Import the app in the arbiter before forking: a release that cannot import (bad settings,
# a missing env variable, a broken dependency) fails at start instead of crash-looping
# workers, and systemd (Type=notify) sees the failure. It also means a code change needs a
# full restart, never a HUP, which is what the deployer does anyway (docs/design.md §6).
preload_app = True

# A request may take at most 30 s before its worker is killed and replaced.
timeout = 30
# On SIGTERM (systemctl stop/restart) workers get 20 s to finish in-flight requests. The
# unit's TimeoutStopSec is 30 s: graceful_timeout stays below it so gunicorn exits on its own
# before systemd escalates to SIGKILL, with 10 s to spare for the arbiter to reap workers.
graceful_timeout = 20

# Recycle workers now and then so a slow leak can never take the site down.
max_requests = 2000
max_requests_jitter = 200

# Logs go to stderr, which systemd sends to the journal. nginx already writes an access log,
# so gunicorn's is off unless GUNICORN_ACCESS_LOG=1 (then to stderr too).
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
_access_log = os.environ.get("GUNICORN_ACCESS_LOG", "").strip().lower() in {"1", "true", "yes"}
accesslog = "-" if _access_log else None

# gunicorn >= 25.1 opens a "control socket" by default for the `gunicornc` tool (worker
# status, scaling, reload, shutdown) at $XDG_RUNTIME_DIR/gunicorn.ctl, else
# ~/.gunicorn/gunicorn.ctl. We disable it: the service is driven by systemd only (a reload
# through it would be a HUP, which keeps the old interpreter and venv), two instances would
# fight over the same default path, and the service user's home is not writable under the
# hardened unit anyway.
control_socket_disable = True

# Under systemd the process title shows which site this is.
proc_name = "skinmenu"

# X-Forwarded-*: gunicorn trusts them from 127.0.0.1/::1 and from unix-socket peers (its
# default), i.e. only from nginx. Django reads X-Forwarded-Proto itself through
# SECURE_PROXY_SSL_HEADER, and nginx always sets it (never passes the client's on).
