"""/healthz: is this release serving, which one, and does the database answer?

200 {"status": "ok", "release": "<sha>", "database": "ok"}
503 {"status": "error", "release": "<sha>", "database": "error"}

`release` is the REVISION file the deployer writes at the release root ("dev" without one);
the deployer's smoke test compares it with the sha it just activated. The view touches no
session and no CSRF token, so it sets no cookie; SECURE_REDIRECT_EXEMPT (production.py)
keeps it reachable over plain HTTP. The database error goes to the log, never to the client.
"""

import logging

from django.conf import settings
from django.db import connections
from django.http import JsonResponse
from django.views.decorators.http import require_safe

logger = logging.getLogger(__name__)

MAX_REVISION_LENGTH = 64


def read_release() -> str:
    try:
        revision = settings.REVISION_FILE.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return "dev"
    return revision[:MAX_REVISION_LENGTH] or "dev"


def database_ok(alias: str = "default") -> bool:
    try:
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    except Exception as exc:  # any failure means "not healthy"; the detail is for the log
        logger.error("healthz: database check failed: %s", type(exc).__name__)
        return False


@require_safe
def healthz(request):
    db_ok = database_ok()
    response = JsonResponse(
        {
            "status": "ok" if db_ok else "error",
            "release": read_release(),
            "database": "ok" if db_ok else "error",
        },
        status=200 if db_ok else 503,
    )
    response["Cache-Control"] = "no-store"
    return response
