"""`make demo`'s front door: scripts/demo-nginx.conf, rendered by scripts/demo.py and run as an
unprivileged nginx with every path under a scratch prefix. It must serve the live release's
hashed static files the way production does and proxy the rest with production's headers."""

import http.client
import http.server
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HASHED = "css/site.0123456789ab.css"
FAVICON = REPO / "app" / "static" / "favicon.ico"


def load_demo():
    spec = importlib.util.spec_from_file_location("demo_script", REPO / "scripts" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo = load_demo()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Upstream(http.server.BaseHTTPRequestHandler):
    """Stands in for gunicorn: records the request headers, answers like Django behind TLS would."""
    seen: list[dict] = []

    def do_GET(self):
        Upstream.seen.append(dict(self.headers.items()))
        self.send_response(404 if self.path == "/no-such-page" else 200)
        self.send_header("Strict-Transport-Security", "max-age=31536000")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def nginx_binary():
    nginx = demo.find_nginx()
    if not nginx:
        pytest.fail("nginx is required for the demo's front door (scripts/install-system-deps installs it)")
    return nginx


@pytest.fixture(scope="module")
def deploy_root(tmp_path_factory):
    """releases/<a>/staticfiles with a hashed and an unhashed file, current -> releases/<a>."""
    root = tmp_path_factory.mktemp("demo") / "deploy"
    for name, css in (("a" * 40, b"body{color:#a00}"), ("b" * 40, b"body{color:#0b0}")):
        static = root / "releases" / name / "staticfiles"
        (static / "css").mkdir(parents=True)
        (static / HASHED).write_bytes(css)
        (static / "css" / "site.css").write_bytes(css)
        (static / ".secret").write_text("no")
        shutil.copy(FAVICON, static / "favicon.ico")
    (root / "shared" / "media" / "documents").mkdir(parents=True)
    (root / "shared" / "media" / "documents" / "private.pdf").write_bytes(b"%PDF private")
    (root / "current").symlink_to("releases/" + "a" * 40)
    return root


@pytest.fixture(scope="module")
def front_door(tmp_path_factory, nginx_binary, deploy_root):
    """One nginx for the module (stopping one takes about a second)."""
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    Upstream.seen.clear()
    prefix, port = tmp_path_factory.mktemp("front-door") / "nginx", free_port()
    demo.start_nginx(nginx_binary, prefix, f"127.0.0.1:{port}", f"127.0.0.1:{upstream.server_port}", deploy_root)
    yield f"http://127.0.0.1:{port}"
    demo.stop_nginx(prefix)
    upstream.shutdown()


def get(url: str, headers: dict | None = None):
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5)
    except urllib.error.HTTPError as exc:
        return exc


def test_the_demo_nginx_config_is_valid_and_keeps_every_path_under_its_prefix(tmp_path, nginx_binary, deploy_root):
    prefix = tmp_path / "nginx"
    (prefix / "tmp").mkdir(parents=True)
    conf = demo.render_nginx_conf(nginx=nginx_binary, prefix=prefix, listen="127.0.0.1:1",
                                  upstream="127.0.0.1:2", deploy_to=deploy_root)
    (prefix / "nginx.conf").write_text(conf)
    result = subprocess.run([*demo.nginx_argv(nginx_binary, prefix), "-t"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for line in conf.splitlines():
        words = line.split()
        if words and words[0] in ("pid", "error_log", "access_log") or words[:1] and words[0].endswith("_temp_path"):
            assert words[1].startswith(str(prefix)), line
    assert "listen 127.0.0.1:1;" in conf
    assert "listen 127.0.0.1:1 default_server;" in conf


def test_the_demo_serves_the_live_releases_hashed_static_file_cached_for_a_year(front_door, deploy_root):
    resp = get(f"{front_door}/static/{HASHED}")
    assert resp.status == 200
    assert resp.read() == (deploy_root / "current" / "staticfiles" / HASHED).read_bytes()
    assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert resp.headers["Content-Type"] == "text/css"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert get(f"{front_door}/static/css/site.css").headers["Cache-Control"] == "public, max-age=300"
    assert get(f"{front_door}/static/.secret").status == 403


def relink_current(deploy_root: Path, sha: str) -> None:
    (deploy_root / "next").symlink_to("releases/" + sha)
    os.replace(deploy_root / "next", deploy_root / "current")


def test_a_relink_of_current_is_served_at_once_without_reloading_the_demo_nginx(front_door, deploy_root):
    assert get(f"{front_door}/static/{HASHED}").read() == b"body{color:#a00}"
    relink_current(deploy_root, "b" * 40)
    try:
        assert get(f"{front_door}/static/{HASHED}").read() == b"body{color:#0b0}"
    finally:
        relink_current(deploy_root, "a" * 40)


def test_the_demo_never_serves_documents_from_media_directly(front_door):
    assert get(f"{front_door}/media/documents/private.pdf").status == 404


def test_the_demo_proxies_pages_with_productions_headers_whatever_the_client_claims(front_door):
    port = front_door.rsplit(":", 1)[1]
    resp = get(f"{front_door}/treatments/", headers={
        "X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "evil.example", "Forwarded": "for=203.0.113.9;proto=https"})
    assert resp.status == 200 and resp.read() == b"ok"
    assert "Strict-Transport-Security" not in resp.headers
    seen = Upstream.seen[-1]
    assert seen["Host"] == f"127.0.0.1:{port}"
    assert seen["X-Forwarded-For"] == "127.0.0.1"
    assert seen["X-Real-IP"] == "127.0.0.1"
    assert seen["X-Forwarded-Proto"] == "http"  # the truth: the demo is plain HTTP
    assert "X-Forwarded-Host" not in seen and "Forwarded" not in seen


def test_the_demo_drops_a_request_for_another_host_without_reaching_the_app(front_door):
    host, port = front_door.removeprefix("http://").split(":")
    before = len(Upstream.seen)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", "/", headers={"Host": "scanner.invalid"})
        with pytest.raises(http.client.RemoteDisconnected):
            conn.getresponse()  # 444: nginx closes the connection without a word
    finally:
        conn.close()
    assert len(Upstream.seen) == before
    for name in ("127.0.0.1", "localhost"):
        assert get(front_door.replace("127.0.0.1", name) + "/treatments/").status == 200


def test_a_browser_asking_for_favicon_ico_gets_the_live_releases_icon(front_door):
    resp = get(f"{front_door}/favicon.ico")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "image/x-icon"
    assert resp.read() == FAVICON.read_bytes()


def policies(conf: Path) -> dict[str, str]:
    """The $skinmenu_csp map ('default' or the admin's regex -> policy) and the Permissions-Policy."""
    text = conf.read_text()
    block = re.search(r"map \$uri \$skinmenu_csp \{(.*?)\}", text, re.S)[1]
    found = dict(re.findall(r'^\s*("[^"]+"|default)\s+"([^"]+)";', block, re.M))
    found["Permissions-Policy"] = re.search(r'add_header Permissions-Policy "([^"]+)" always;', text)[1]
    return found


def test_the_demo_sends_productions_policies_word_for_word():
    production = policies(REPO / "nginx" / "skinmenu.conf")
    assert set(production) == {"default", '"~^/(django-)?admin/"', "Permissions-Policy"}
    assert policies(REPO / "scripts" / "demo-nginx.conf") == production


def test_every_page_gets_the_sites_csp_and_the_admin_its_own(front_door):
    production = policies(REPO / "nginx" / "skinmenu.conf")
    for path, policy in (("/", production["default"]), ("/treatments/", production["default"]),
                         ("/admin/", production['"~^/(django-)?admin/"']),
                         ("/admin/pages/3/edit/", production['"~^/(django-)?admin/"']),
                         ("/django-admin/", production['"~^/(django-)?admin/"'])):
        resp = get(f"{front_door}{path}")
        assert resp.status == 200, path
        assert resp.headers["Content-Security-Policy"] == policy, path
        assert resp.headers["Permissions-Policy"] == production["Permissions-Policy"], path
    site = production["default"]
    assert "'unsafe-inline'" not in site and "default-src 'self'" in site and "object-src 'none'" in site
    # A page's own error (the upstream's 404 or 500) carries the policy too (`always`).
    assert get(f"{front_door}/no-such-page").headers["Content-Security-Policy"] == site
