"""/healthz: what the deployer's smoke test and the monitors see.

200 {"status": "ok", "release": <sha>, "database": "ok"} where the sha is the REVISION file at
the release root; 503 with "database": "error" when the database does not answer, without
leaking why; never a redirect, a cookie or a cached answer.
"""

import json
import textwrap
from unittest import mock

import pytest
from django.db import OperationalError, connections
from django.test import override_settings

SHA = "0123456789abcdef0123456789abcdef01234567"

pytestmark = pytest.mark.django_db


def test_healthy_site_answers_200_with_release_and_database_ok(client, tmp_path):
    with override_settings(REVISION_FILE=tmp_path / "REVISION"):  # no REVISION: a dev checkout
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"status": "ok", "release": "dev", "database": "ok"}


def test_release_is_read_from_the_revision_file(client, tmp_path):
    revision = tmp_path / "REVISION"
    revision.write_text(f"{SHA}\n")  # the deployer writes the sha and a newline
    with override_settings(REVISION_FILE=revision):
        response = client.get("/healthz")
    assert response.json()["release"] == SHA


def test_an_empty_revision_file_reports_dev(client, tmp_path):
    revision = tmp_path / "REVISION"
    revision.write_text("  \n")
    with override_settings(REVISION_FILE=revision):
        assert client.get("/healthz").json()["release"] == "dev"


def test_default_revision_file_is_at_the_release_root(settings):
    assert settings.REVISION_FILE == settings.RELEASE_ROOT / "REVISION"
    assert settings.RELEASE_ROOT == settings.APP_DIR.parent


def test_database_that_does_not_answer_gives_503_without_details(client, caplog):
    secret_detail = "unable to open database file /home/deploy/shared/db/skinmenu.sqlite3"
    with mock.patch.object(
        connections["default"], "cursor", side_effect=OperationalError(secret_detail)
    ):
        response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["database"] == "error"
    assert response.json()["status"] == "error"
    assert set(response.json()) == {"status", "release", "database"}
    assert secret_detail not in response.content.decode()
    assert response["Cache-Control"] == "no-store"
    # The operator finds the cause in the journal.
    assert "healthz: database check failed: OperationalError" in caplog.text


def test_no_cookie_no_cache_no_redirect(client):
    response = client.get("/healthz")
    assert response.status_code == 200  # exactly /healthz: no APPEND_SLASH redirect
    assert response["Cache-Control"] == "no-store"
    assert not response.cookies
    assert "Set-Cookie" not in response.headers


def test_healthz_is_read_only(client):
    assert client.post("/healthz").status_code == 405
    assert client.head("/healthz").status_code == 200


# --- under production settings, in the process a release would run ---------------------------

PROBE = textwrap.dedent(
    """
    import json
    import django
    django.setup()
    from django.test import Client

    def seen(response):
        body = response.content.decode()
        return {
            "status": response.status_code,
            "json": json.loads(body) if response["Content-Type"] == "application/json" else None,
            "location": response.headers.get("Location"),
            "cookies": sorted(response.cookies),
            "cache_control": response.headers.get("Cache-Control"),
            "hsts": response.headers.get("Strict-Transport-Security"),
            "body": body,
        }

    # Like a server: a failing view is a 500 response, not an exception in the caller.
    client = Client(HTTP_HOST="skinmenu.example.com", raise_request_exception=False)
    https = {"HTTP_X_FORWARDED_PROTO": "https"}
    print(json.dumps({
        "healthz_http": seen(client.get("/healthz")),
        "healthz_https": seen(client.get("/healthz", **https)),
        "home_http": seen(client.get("/")),
        "admin_login_https": seen(client.get("/admin/login/", **https)),
    }))
    """
)


def probe(python, release_root, env):
    result = python(["-c", PROBE], env=env, cwd=release_root / "app")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_production_healthz_over_https_and_exempt_from_the_ssl_redirect(
    python, built_release, prod_env, release_env
):
    sha = (built_release / "REVISION").read_text().strip()
    # The release's own database (<release>/db/skinmenu.sqlite3), migrated.
    seen = probe(python, built_release, release_env(prod_env))

    # nginx over https (X-Forwarded-Proto) — the smoke test's view.
    assert seen["healthz_https"]["status"] == 200
    assert seen["healthz_https"]["json"] == {"status": "ok", "release": sha, "database": "ok"}
    assert seen["healthz_https"]["hsts"] == "max-age=31536000; includeSubDomains"
    # Plain HTTP straight to gunicorn: still answered, not redirected.
    assert seen["healthz_http"]["status"] == 200
    assert seen["healthz_http"]["json"]["release"] == sha
    for name in ("healthz_http", "healthz_https"):
        assert seen[name]["cookies"] == []
        assert seen[name]["cache_control"] == "no-store"
    # Everything else is redirected to https.
    assert seen["home_http"]["status"] == 301
    assert seen["home_http"]["location"] == "https://skinmenu.example.com/"
    # The admin login page the smoke test checks.
    assert seen["admin_login_https"]["status"] == 200
    assert "csrftoken" in seen["admin_login_https"]["cookies"]


def test_production_plain_http_deploy_when_ssl_redirect_is_off(
    python, built_release, prod_env, release_env
):
    env = {**release_env(prod_env), "DJANGO_SECURE_SSL_REDIRECT": "false"}
    seen = probe(python, built_release, env)
    assert seen["healthz_http"]["status"] == 200
    assert seen["healthz_http"]["json"]["status"] == "ok"
    assert seen["home_http"]["status"] != 301
    assert seen["home_http"]["location"] is None


def test_production_healthz_503_when_the_database_cannot_be_opened(
    python, built_release, prod_env, tmp_path
):
    broken = tmp_path / "no-such-dir" / "skinmenu.sqlite3"
    seen = probe(python, built_release, {**prod_env, "DJANGO_DB_PATH": str(broken)})
    assert seen["healthz_https"]["status"] == 503
    assert seen["healthz_https"]["json"] == {
        "status": "error",
        "release": (built_release / "REVISION").read_text().strip(),
        "database": "error",
    }
    assert "no-such-dir" not in seen["healthz_https"]["body"]
