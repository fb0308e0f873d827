"""Sending a notification (docs/design.md §15) against real local endpoints: the total time is capped
by notify.timeout even when the endpoint trickles its answer, and no failure ever shows the URL."""

import http.server
import json
import socket
import threading
import time
from pathlib import Path

import pytest

from deployer import notify
from deployer.config import Config, DjangoConfig, NotifyConfig, ServiceConfig, SmokeConfig

TOKEN = "tok-9f8e7d6c5b4a"


def make_config(tmp_path: Path, url: str | None, timeout: float = 1.0) -> Config:
    env_file = tmp_path / "skinmenu.env"
    env_file.write_text("DJANGO_SECRET_KEY=x\n" + (f"WEBHOOK={url}\n" if url is not None else ""))
    env_file.chmod(0o600)
    return Config(
        path=tmp_path / "releases.yml", app="skinmenu", repo=str(tmp_path), deploy_to=tmp_path / "deploy",
        python="python3", django=DjangoConfig("app", "config.settings.production", "app/requirements.txt"),
        env_file=env_file, service=ServiceConfig("true"), smoke=SmokeConfig(url="http://127.0.0.1:9"),
        notify=NotifyConfig("WEBHOOK", timeout),
    )


@pytest.fixture
def endpoint():
    """An HTTP server whose answer each test picks: a status, or a body trickled a byte at a time."""
    state = {"status": 200, "trickle": False, "bodies": []}
    stop = threading.Event()
    threads_before = threading.active_count()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            state["bodies"].append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(state["status"])
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.flush()
            for _ in range(100 if state["trickle"] else 0):  # never 1 s of silence: a read timeout never fires
                if stop.wait(0.2):
                    return
                self.wfile.write(b".")
                self.wfile.flush()
            self.wfile.write(b"." * (0 if state["trickle"] else 100))

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/{TOKEN}", state
    stop.set()
    server.shutdown()
    server.server_close()
    deadline = time.monotonic() + 5  # no thread outlives the test (later tests fork)
    while threading.active_count() > threads_before and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_notification_posts_the_payload_as_json_and_says_nothing(tmp_path, endpoint, capsys):
    url, state = endpoint
    notify.post(make_config(tmp_path, url), {"event": "deploy", "result": "ok"})
    assert state["bodies"] == [{"event": "deploy", "result": "ok"}]
    assert capsys.readouterr().err == ""


def test_an_endpoint_that_trickles_its_answer_is_cut_off_at_the_timeout(tmp_path, endpoint, capsys):
    url, state = endpoint
    state["trickle"] = True
    started = time.monotonic()
    notify.post(make_config(tmp_path, url, timeout=1.0), {"event": "deploy"})
    assert time.monotonic() - started < 1.5
    assert capsys.readouterr().err == "deployer: warning: notification failed: no answer from the webhook within 1s\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("url, reason", [
    (None, "does not define WEBHOOK"),
    (f"htp://127.0.0.1/{TOKEN}", "the value of WEBHOOK in the env file is not a usable http(s) URL"),
    (f"http://[{TOKEN}/", "the value of WEBHOOK in the env file is not a usable http(s) URL"),
    ("refused", "cannot connect to the webhook: Connection refused"),
    (f"http://{TOKEN}.invalid/hooks", "cannot connect to the webhook: "),
])
def test_every_failure_is_one_warning_line_without_the_url(tmp_path, capsys, url, reason):
    if url == "refused":
        url = f"http://127.0.0.1:{free_port()}/hooks/{TOKEN}"
    notify.post(make_config(tmp_path, url), {"event": "deploy"})
    err = capsys.readouterr().err
    assert err.startswith("deployer: warning: notification failed: ") and err.count("\n") == 1
    assert reason in err
    assert TOKEN not in err


def test_an_endpoint_answering_500_is_a_warning(tmp_path, endpoint, capsys):
    url, state = endpoint
    state["status"] = 500
    notify.post(make_config(tmp_path, url), {"event": "deploy"})
    assert capsys.readouterr().err == "deployer: warning: notification failed: the webhook answered HTTP 500\n"
