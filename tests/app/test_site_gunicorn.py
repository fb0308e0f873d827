"""gunicorn as systemd runs it: `python -m gunicorn -c config/gunicorn.py config.wsgi` in app/.

The config file only says what the app needs (workers, preload, timeouts aligned with the
unit's TimeoutStopSec=30, logging, no control socket); the socket comes from systemd or
--bind. A release whose settings cannot load must fail to start, not crash-loop workers.
"""

import http.client
import json
import os
import runpy
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from gunicorn.config import KNOWN_SETTINGS

APP_DIR = Path(__file__).resolve().parents[2] / "app"
CONFIG = APP_DIR / "config" / "gunicorn.py"
SYSTEMD_TIMEOUT_STOP_SEC = 30


def load_config(monkeypatch, **env):
    for name in ("GUNICORN_WORKERS", "GUNICORN_ACCESS_LOG", "GUNICORN_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    namespace = runpy.run_path(str(CONFIG))
    # The settings: public names that are neither helpers nor imported modules.
    return {
        name: value
        for name, value in namespace.items()
        if not name.startswith("_") and not callable(value) and not isinstance(value, type(os))
    }


def test_every_name_in_the_config_is_a_gunicorn_setting(monkeypatch):
    # gunicorn silently ignores unknown names in a config file: a typo would be lost.
    known = {setting.name for setting in KNOWN_SETTINGS}
    assert set(load_config(monkeypatch)) - known == set()


def test_config_defaults(monkeypatch):
    cfg = load_config(monkeypatch)
    assert cfg["workers"] == 2
    assert cfg["preload_app"] is True
    assert cfg["timeout"] == 30
    assert cfg["graceful_timeout"] == 20
    assert cfg["graceful_timeout"] < SYSTEMD_TIMEOUT_STOP_SEC
    assert cfg["errorlog"] == "-"
    assert cfg["accesslog"] is None
    assert cfg["control_socket_disable"] is True
    assert cfg["wsgi_app"] == "config.wsgi:application"
    # The listening socket belongs to systemd (LISTEN_FDS) or the command line (--bind).
    assert "bind" not in cfg


def test_workers_and_access_log_from_the_environment(monkeypatch):
    cfg = load_config(monkeypatch, GUNICORN_WORKERS="5", GUNICORN_ACCESS_LOG="1")
    assert cfg["workers"] == 5
    assert cfg["accesslog"] == "-"


def test_bad_worker_count_is_refused(monkeypatch):
    with pytest.raises(SystemExit, match="GUNICORN_WORKERS must be a whole number"):
        load_config(monkeypatch, GUNICORN_WORKERS="two")


# --- the real server ---------------------------------------------------------------------------


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=10)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self.unix_path)


def get(sock_path, path, **headers):
    conn = UnixHTTPConnection(sock_path)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


@pytest.fixture
def short_tmp():
    # AF_UNIX paths are limited to ~107 bytes; pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="skm-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def wait_until_listening(server, sock, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not sock.exists():
        assert server.poll() is None, server.communicate()[1]
        assert time.monotonic() < deadline, f"gunicorn did not listen within {seconds:g} s"
        time.sleep(0.1)


def stop_gunicorn(server) -> str:
    """SIGTERM, as systemd stops it; its stderr (the journal)."""
    server.send_signal(signal.SIGTERM)
    try:
        return server.communicate(timeout=25)[1]
    except subprocess.TimeoutExpired:
        server.kill()
        raise


def start_gunicorn(release, env, sock):
    return subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.py",
         "--bind", f"unix:{sock}", "config.wsgi"],
        cwd=release / "app",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_gunicorn_serves_the_release_over_a_unix_socket(
    built_release, prod_env, release_env, short_tmp
):
    sock = short_tmp / "skinmenu.sock"
    env = {**release_env(prod_env), "HOME": str(short_tmp)}
    env.pop("DJANGO_SETTINGS_MODULE")  # config.wsgi defaults to production
    server = start_gunicorn(built_release, env, sock)
    try:
        wait_until_listening(server, sock)
        status, headers, body = get(
            str(sock), "/healthz", Host="skinmenu.example.com", **{"X-Forwarded-Proto": "https"}
        )
        assert status == 200
        assert json.loads(body) == {
            "status": "ok",
            "release": (built_release / "REVISION").read_text().strip(),
            "database": "ok",
        }
        status, headers, _ = get(
            str(sock), "/admin/login/", Host="skinmenu.example.com",
            **{"X-Forwarded-Proto": "https"},
        )
        assert status == 200
        # gunicorn's control socket (on by default since 25.1) is off.
        assert not (short_tmp / ".gunicorn").exists()
    finally:
        stderr = stop_gunicorn(server)
    assert server.returncode == 0, stderr
    assert "Shutting down: Master" in stderr
    assert prod_env["DJANGO_SECRET_KEY"] not in stderr


def test_gunicorn_refuses_to_start_a_release_that_cannot_load(built_release, prod_env, short_tmp):
    env = {k: v for k, v in prod_env.items() if k != "DJANGO_SECRET_KEY"}
    server = start_gunicorn(built_release, env, short_tmp / "skinmenu.sock")
    try:
        _, stderr = server.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        raise
    assert server.returncode != 0
    assert "DJANGO_SECRET_KEY is not set" in stderr


def request(sock_path, method, path, **headers):
    """One request over the unix socket: (status, headers, the raw bytes after the headers)."""
    conn = UnixHTTPConnection(sock_path)
    try:
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        # A HEAD response's body is not read by http.client: read what the server really sent.
        raw = response.fp.read() if method == "HEAD" else response.read()
        return response.status, dict(response.getheaders()), raw
    finally:
        conn.close()


def test_a_monitors_head_and_a_scanners_host_leave_one_quiet_line_in_the_journal(
    built_release, prod_env, release_env, short_tmp
):
    """A monitor probes `HEAD /healthz`; a scanner reaches gunicorn with a Host the site does
    not serve. The journal gets one WARNING line naming the host: no traceback, no ERROR,
    and no gunicorn warning about a body on a HEAD response."""
    sock = short_tmp / "skinmenu.sock"
    env = {**release_env(prod_env), "HOME": str(short_tmp)}
    server = start_gunicorn(built_release, env, sock)
    try:
        wait_until_listening(server, sock)
        https = {"Host": "skinmenu.example.com", "X-Forwarded-Proto": "https"}
        _, get_headers, get_body = request(str(sock), "GET", "/healthz", **https)
        status, head_headers, head_body = request(str(sock), "HEAD", "/healthz", **https)
        assert status == 200
        assert head_body == b""
        assert head_headers["Content-Length"] == get_headers["Content-Length"] == str(len(get_body))
        status, _, _ = request(str(sock), "GET", "/", Host="scanner.invalid",
                               **{"X-Forwarded-Proto": "https"})
        assert status == 400
    finally:
        stderr = stop_gunicorn(server)
    assert "no-body response" not in stderr
    assert "Traceback" not in stderr and "ERROR" not in stderr
    host_lines = [line for line in stderr.splitlines() if "scanner.invalid" in line]
    assert host_lines == [
        "WARNING django.security.DisallowedHost: Invalid HTTP_HOST header: 'scanner.invalid'. "
        "You may need to add 'scanner.invalid' to ALLOWED_HOSTS."
    ]
