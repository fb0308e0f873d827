"""The site and the Wagtail admin work under the Content-Security-Policy nginx sends.

A real headless Chromium logs into the admin through the demo's nginx (scripts/demo-nginx.conf,
the policy production's nginx/skinmenu.conf sends too) in front of a real gunicorn with the
production settings, and visits the dashboard, a page's edit view and the site's pages. The
browser's console must show no CSP violation, and nothing may be fetched from another origin.
Without Chromium this test fails under CI=true and is skipped loudly otherwise
(scripts/install-system-deps installs it).
"""

import importlib.util
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from headless_chromium import Chromium, find_chromium

REPO = Path(__file__).resolve().parents[2]
ADMIN, PASSWORD = "editor", secrets.token_urlsafe(16)


def load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo = load("demo_script", REPO / "scripts" / "demo.py")
# This tier's helpers, by path: `import conftest` may find another tier's conftest first.
app_tier = load("app_tier_conftest", Path(__file__).with_name("conftest.py"))


def ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def required(what: str, found: str | None, install: str) -> str:
    if found:
        return found
    reason = f"{what} is not installed ({install}; scripts/install-system-deps does it as root)"
    if ci():
        pytest.fail(f"the browser test must run under CI=true but cannot: {reason}", pytrace=False)
    pytest.skip(f"browser CSP test NOT RUN: {reason}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def short_tmp():
    path = Path(tempfile.mkdtemp(prefix="skm-csp-", dir="/tmp"))  # AF_UNIX paths are short
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def site(built_release, short_tmp):
    """The built release behind the demo's nginx on 127.0.0.1, as `make demo` serves it:
    a copy of its migrated database with the demo content and an admin, gunicorn on a unix
    socket, nginx's /static/ from current/staticfiles/. Yields the site's origin."""
    nginx = required("nginx", demo.find_nginx(), "apt-get install nginx")
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    deploy_root = short_tmp / "deploy"
    (deploy_root / "shared" / "media").mkdir(parents=True)
    (deploy_root / "current").symlink_to(built_release)
    database = short_tmp / "skinmenu.sqlite3"
    shutil.copy(built_release / "db" / "skinmenu.sqlite3", database)
    env = {**app_tier.make_prod_env(short_tmp), "DJANGO_DB_PATH": str(database),
           "DJANGO_MEDIA_ROOT": str(deploy_root / "shared" / "media"),
           "DJANGO_ALLOWED_HOSTS": "127.0.0.1", "DJANGO_CSRF_TRUSTED_ORIGINS": origin,
           "WAGTAILADMIN_BASE_URL": origin, "DJANGO_SECURE_SSL_REDIRECT": "false"}
    for command in (["seed_demo_content"],
                    ["createsuperuser", "--noinput", "--username", ADMIN, "--email", "editor@skinmenu.example.com"]):
        result = app_tier.run_manage(*command, env={**env, "DJANGO_SUPERUSER_PASSWORD": PASSWORD},
                            app_dir=built_release / "app")
        assert result.returncode == 0, result.stderr
    sock = short_tmp / "app.sock"
    gunicorn = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.py", "--bind", f"unix:{sock}", "config.wsgi"],
        cwd=built_release / "app", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    prefix = short_tmp / "nginx"
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert gunicorn.poll() is None, gunicorn.communicate()[1]
            assert time.monotonic() < deadline, "gunicorn did not listen within 30 s"
            time.sleep(0.1)
        demo.start_nginx(nginx, prefix, f"127.0.0.1:{port}", f"unix:{sock}", deploy_root)
        yield origin
    finally:
        demo.stop_nginx(prefix)
        gunicorn.send_signal(signal.SIGTERM)
        gunicorn.communicate(timeout=30)


@pytest.fixture(scope="module")
def browser(short_tmp):
    chromium = Chromium(required("Chromium", find_chromium(), "apt-get install chromium"), short_tmp / "profile")
    yield chromium
    chromium.close()


def log_in(tab):
    tab.visit("/admin/login/")
    tab.evaluate(f"""
        document.querySelector("#id_username").value = {ADMIN!r};
        document.querySelector("#id_password").value = {PASSWORD!r};
        document.querySelector("form button[type=submit]").click();
    """)
    tab.wait_until_loaded()
    assert tab.url() == tab.origin + "/admin/", "the login did not reach the dashboard"


def production_policy(path: str) -> str:
    """The Content-Security-Policy nginx/skinmenu.conf sends for `path` (its $skinmenu_csp map)."""
    block = re.search(r"map \$uri \$skinmenu_csp \{(.*?)\}", (REPO / "nginx" / "skinmenu.conf").read_text(), re.S)[1]
    policies = dict(re.findall(r'^\s*("[^"]+"|default)\s+"([^"]+)";', block, re.M))
    admin = re.match(r"/(django-)?admin/", path)
    return policies['"~^/(django-)?admin/"'] if admin else policies["default"]


def page_id(tab, page_type: str) -> int:
    return tab.evaluate(f"fetch('/admin/api/main/pages/?type={page_type}')"
                        ".then(answer => answer.json()).then(found => found.items[0].id)")


def test_an_editor_works_in_the_admin_and_visits_the_site_without_a_csp_violation(site, browser):
    tab = browser.new_tab(site)
    log_in(tab)
    violations = {"/admin/": tab.csp_violations()}
    treatment, home = page_id(tab, "treatments.TreatmentPage"), page_id(tab, "home.HomePage")
    for path in (f"/admin/pages/{treatment}/edit/", f"/admin/pages/{home}/", "/admin/images/",
                 "/django-admin/", "/", "/treatments/", "/search/?query=peel"):
        tab.visit(path)
        violations[path] = tab.csp_violations()

    assert {path: found for path, found in violations.items() if found} == {}
    for path in violations:  # every page really was under production's policy
        headers = tab.document_headers[site + path]
        assert headers.get("content-security-policy") == production_policy(path), path
        assert "camera=()" in headers.get("permissions-policy", ""), path
    assert tab.other_origins == []  # and the browser fetched nothing from another origin


def test_the_sites_policy_really_blocks_an_injected_inline_script(site, browser):
    # The recorder is not blind: what an XSS would try is refused, and reported.
    tab = browser.new_tab(site)
    tab.visit("/treatments/")
    tab.evaluate("""const s = document.createElement("script");
                    s.textContent = "window.injected = true"; document.body.append(s);""")
    time.sleep(0.2)  # the violation event is queued as a task
    assert tab.evaluate("window.injected === true") is False
    assert any(v.startswith("script-src-elem blocked inline") for v in tab.csp_violations())
