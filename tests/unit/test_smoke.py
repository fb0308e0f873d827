"""The smoke test speaks to the front door with curl --resolve semantics (docs/design.md §9): it connects
to `resolve`, but TLS (SNI, certificate check) and the Host header use the real domain.

A real TLS server on 127.0.0.1 with a certificate from a throwaway CA stands in for nginx."""

import http.server
import json
import shutil
import ssl
import subprocess
import threading

import pytest

from deployer import smoke
from deployer.config import SmokeConfig
from deployer.errors import OperationFailed

DOMAIN = "skinmenu.example.com"
SHA = "e" * 40
HASHED = "css/site.0123456789ab.css"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    if not shutil.which("openssl"):
        pytest.fail("openssl is required for the smoke test's TLS tests (apt-get install openssl)")
    d = tmp_path_factory.mktemp("tls")

    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=Skinmenu Test CA",
            "-keyout", "ca.key", "-out", "ca.pem")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={DOMAIN}", "-keyout", "site.key", "-out", "site.csr")
    (d / "ext").write_text(f"subjectAltName=DNS:{DOMAIN}\n")
    openssl("x509", "-req", "-in", "site.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "ext", "-out", "site.pem")
    return d


@pytest.fixture
def release(tmp_path):
    static = tmp_path / "staticfiles"
    (static / "css").mkdir(parents=True)
    (static / HASHED).write_text("body { color: teal; }\n")
    (static / "staticfiles.json").write_text(json.dumps({"paths": {"css/site.css": HASHED}}))
    return tmp_path


@pytest.fixture
def front_door(certs, release):
    """An HTTPS server that answers only for the right SNI and Host, like an nginx vhost."""
    seen = {"sni": [], "host": [], "path": []}
    state = {"release": SHA}
    served_css = (release / "staticfiles" / HASHED).read_bytes()  # what nginx would have

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen["host"].append(self.headers["Host"])
            seen["path"].append(self.path)
            if self.headers["Host"].split(":")[0] != DOMAIN:
                return self.reply(404, b"unknown vhost")
            if self.path == "/admin/login/":
                return self.reply(200, b"<form>login</form>")
            if self.path == "/healthz":
                return self.reply(200, json.dumps({"status": "ok", "release": state["release"]}).encode())
            if self.path == f"/static/{HASHED}":
                return self.reply(200, served_css)
            if self.path in ("/", "/treatments/"):
                return self.reply(200, b"<h1>Skinmenu</h1>")
            if self.path == "/broken/":
                return self.reply(500, b"server error")
            return self.reply(404, b"not found")

        def reply(self, status, body):
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs / "site.pem", certs / "site.key")
    context.sni_callback = lambda sock, name, ctx: seen["sni"].append(name)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], seen, state
    server.shutdown()
    server.server_close()


def config(port, certs, **overrides):
    values = {"url": f"https://{DOMAIN}:{port}", "resolve": "127.0.0.1", "cacert": certs / "ca.pem",
              "check_static": True, "timeout": 2.0}
    values.update(overrides)
    return SmokeConfig(**values)


def test_smoke_connects_to_resolve_with_sni_and_host_of_the_real_domain(front_door, certs, release):
    port, seen, _ = front_door
    elapsed = smoke.run(config(port, certs), SHA, release)
    assert elapsed < 2
    assert set(seen["sni"]) == {DOMAIN}
    assert set(seen["host"]) == {f"{DOMAIN}:{port}"}
    assert seen["path"] == ["/admin/login/", "/healthz", f"/static/{HASHED}", "/"]  # smoke.paths defaults to /


def test_smoke_fetches_every_smoke_path_through_the_front_door(front_door, certs, release):
    port, seen, _ = front_door
    smoke.run(config(port, certs, paths=("/", "/treatments/")), SHA, release)
    assert seen["path"][-2:] == ["/", "/treatments/"]
    assert set(seen["sni"]) == {DOMAIN}
    assert set(seen["host"]) == {f"{DOMAIN}:{port}"}


@pytest.mark.parametrize("path, status", [("/broken/", 500), ("/no-such-page/", 404)])
def test_smoke_fails_naming_a_smoke_path_that_does_not_answer_200(front_door, certs, release, path, status):
    port, seen, _ = front_door
    with pytest.raises(OperationFailed, match=f"GET {path} \\(smoke.paths\\) answered {status}, expected 200"):
        smoke.run(config(port, certs, paths=("/", path), timeout=0.5), SHA, release)
    assert seen["path"].count(path) >= 2  # retried like every other check until the timeout ran out


def test_smoke_fails_when_healthz_reports_another_release(front_door, certs, release):
    port, _, state = front_door
    state["release"] = "f" * 40
    with pytest.raises(OperationFailed, match="reports release ffffffffffff, expected eeeeeeeeeeee"):
        smoke.run(config(port, certs, timeout=0.5), SHA, release)


def test_smoke_fails_when_the_static_file_is_not_the_releases(front_door, certs, release):
    port, _, _ = front_door
    (release / "staticfiles" / HASHED).write_text("something else\n")
    with pytest.raises(OperationFailed, match="different bytes"):
        smoke.run(config(port, certs, timeout=0.5), SHA, release)


def test_smoke_refuses_a_certificate_it_cannot_verify(front_door, certs, release):
    port, _, _ = front_door
    with pytest.raises(OperationFailed, match="CERTIFICATE_VERIFY_FAILED|certificate"):
        smoke.run(config(port, certs, cacert=None, timeout=0.5), SHA, release)


def test_smoke_checks_the_certificate_against_the_domain_not_the_address(front_door, certs, release):
    port, _, _ = front_door
    wrong = config(port, certs, url=f"https://other.example.com:{port}", timeout=0.5)
    with pytest.raises(OperationFailed, match="other.example.com|hostname|certificate"):
        smoke.run(wrong, SHA, release)


def test_the_static_file_picked_is_the_releases_own_css(release):
    url, on_disk = smoke.pick_static_file(release)
    assert url == f"/static/{HASHED}"
    assert on_disk == release / "staticfiles" / HASHED


def test_target_without_resolve_connects_to_the_url_host():
    t = smoke.target(SmokeConfig(url="http://127.0.0.1:8123/site"))
    assert (t.connect_to, t.port, t.prefix, t.host_header) == ("127.0.0.1", 8123, "/site", "127.0.0.1:8123")
    assert smoke.target(SmokeConfig(url=f"https://{DOMAIN}")).host_header == DOMAIN
