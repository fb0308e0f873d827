"""Notifications (docs/design.md §15): one JSON POST per finished command that changed something,
sent to a webhook whose URL is a secret from the env file. A real HTTP server on 127.0.0.1 stands
in for the chat or incident tool; the deploys are real."""

from __future__ import annotations

import getpass
import http.server
import json
import secrets
import socket
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

TIMEOUT = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Webhook:
    """An HTTP endpoint that records what it is sent and answers as `mode` says: ok, 500 or hang."""

    def __init__(self) -> None:
        self.token = "tok" + secrets.token_hex(12)
        self.mode = "ok"
        self.received: list[dict] = []
        webhook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                webhook.received.append({"path": self.path, "type": self.headers["Content-Type"],
                                         "payload": json.loads(body)})
                if webhook.mode == "hang":
                    time.sleep(30)
                status = 500 if webhook.mode == "500" else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/{self.token}?key={self.token}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def payloads(self) -> list[dict]:
        return [request["payload"] for request in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.close()


def use_webhook(deployment, url: str | None, timeout: float = TIMEOUT) -> None:
    """Name DEPLOYER_WEBHOOK_URL in the config and put `url` into the env file (None: leave it out)."""
    lines = [line for line in deployment.env_file.read_text().splitlines() if not line.startswith("DEPLOYER_WEBHOOK_URL=")]
    if url is not None:
        lines.append(f"DEPLOYER_WEBHOOK_URL={url}")
    deployment.env_file.write_text("\n".join(lines) + "\n")
    deployment.write_config(notify={"webhook_env": "DEPLOYER_WEBHOOK_URL", "timeout": timeout})


def run(deployment, token: str, *args: str, expect: int = 0):
    """The real CLI; the webhook URL (its token) must never appear in anything it prints."""
    result = deployment.deployer(*args)
    assert result.returncode == expect, f"deployer {' '.join(args)} exited {result.returncode}\n{result.stderr}"
    assert token not in result.stdout + result.stderr
    return result


def warnings(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("deployer: warning:")]


def test_a_deploy_posts_what_went_live_who_did_it_and_how_it_went(deployment, source_repo, webhook):
    use_webhook(deployment, webhook.url)
    base, visible = source_repo.sha("base"), source_repo.sha("visible")
    run(deployment, webhook.token, "deploy", "base")
    started = datetime.now(timezone.utc).replace(microsecond=0)
    result = run(deployment, webhook.token, "deploy", "visible")

    assert warnings(result) == []
    assert len(webhook.received) == 2  # one per command
    request = webhook.received[-1]
    assert request["path"] == f"/hooks/{webhook.token}?key={webhook.token}"
    assert request["type"] == "application/json"
    payload = request["payload"]
    host = socket.gethostname()
    assert {key: payload[key] for key in ("event", "app", "sha", "previous", "result", "user", "host", "servers")} == {
        "event": "deploy", "app": "skinmenu", "sha": visible, "previous": base, "result": "ok",
        "user": getpass.getuser(), "host": host, "servers": [host],
    }
    assert isinstance(payload["seconds"], (int, float)) and 0 < payload["seconds"] < 600
    sent = datetime.fromisoformat(payload["time"])
    assert sent.utcoffset() == timedelta(0)
    assert started <= sent <= datetime.now(timezone.utc)
    assert webhook.payloads[0]["sha"] == base and webhook.payloads[0]["previous"] is None

    run(deployment, webhook.token, "deploy", "visible")  # already built and live: nothing changed
    assert len(webhook.received) == 2


def test_a_deploy_that_fails_its_smoke_test_posts_failed_smoke(deployment, source_repo, webhook):
    use_webhook(deployment, webhook.url)
    run(deployment, webhook.token, "deploy", "base")
    result = run(deployment, webhook.token, "--debug", "deploy", "no-boot", expect=1)

    assert result.stderr.rstrip().splitlines()[-1].startswith("deployer: error:")
    payload = webhook.payloads[-1]
    assert (payload["event"], payload["sha"], payload["previous"], payload["result"]) == (
        "deploy", source_repo.sha("no-boot"), source_repo.sha("base"), "failed-smoke")
    assert payload["reason"]
    assert deployment.current == source_repo.sha("base")

    run(deployment, webhook.token, "deploy", "bad-req", expect=1)  # the build fails: nothing live changed
    payload = webhook.payloads[-1]
    assert (payload["event"], payload["sha"], payload["previous"], payload["result"]) == (
        "deploy", source_repo.sha("bad-req"), source_repo.sha("base"), "failed")
    assert "create venv" in payload["reason"]
    sent = len(webhook.received)
    run(deployment, webhook.token, "deploy", "no-such-branch", expect=2)  # bad input: nothing to report
    assert len(webhook.received) == sent


def test_release_activate_prune_and_rollback_each_post_what_they_did(deployment, source_repo, webhook):
    use_webhook(deployment, webhook.url)
    base, second, third = (source_repo.sha(ref) for ref in ("base", "second", "third"))
    run(deployment, webhook.token, "deploy", "base")
    run(deployment, webhook.token, "release", "second")
    run(deployment, webhook.token, "release", "second")  # already built: no post
    run(deployment, webhook.token, "activate", second[:12])
    run(deployment, webhook.token, "deploy", "third")
    run(deployment, webhook.token, "prune", "--keep", "1", "--dry-run")  # changes nothing: no post
    run(deployment, webhook.token, "prune", "--keep", "1")  # removes base
    run(deployment, webhook.token, "prune", "--keep", "1")  # nothing left to remove: no post
    run(deployment, webhook.token, "rollback")

    summary = [(p["event"], p["sha"], p["previous"], p["result"]) for p in webhook.payloads]
    assert summary == [
        ("deploy", base, None, "ok"),
        ("release", second, base, "ok"),
        ("activate", second, base, "ok"),
        ("deploy", third, second, "ok"),
        ("prune", third, None, "ok"),
        ("rollback", second, third, "ok"),
    ]
    assert webhook.payloads[4]["removed"] == [base]
    assert base not in deployment.releases


def test_a_hanging_webhook_delays_the_command_by_at_most_its_timeout(deployment, source_repo, webhook):
    deployment.ok("deploy", "base")
    second = deployment.release("second")
    started = time.monotonic()
    deployment.ok("activate", second)
    without_notify = time.monotonic() - started

    webhook.mode = "hang"  # the handler sleeps 30 s before it answers
    use_webhook(deployment, webhook.url)
    started = time.monotonic()
    result = run(deployment, webhook.token, "activate", source_repo.sha("base"))
    with_hang = time.monotonic() - started

    assert webhook.payloads[-1]["event"] == "activate"  # it was sent, and the endpoint hung
    assert warnings(result) == [f"deployer: warning: notification failed: no answer from the webhook within {TIMEOUT}s"]
    assert with_hang < without_notify + TIMEOUT + 3, (with_hang, without_notify)
    assert deployment.current == source_repo.sha("base")


def test_a_webhook_that_fails_refuses_or_is_missing_is_one_warning_and_exit_0(deployment, source_repo, webhook):
    webhook.mode = "500"
    use_webhook(deployment, webhook.url)
    result = run(deployment, webhook.token, "--debug", "deploy", "base")
    assert warnings(result) == ["deployer: warning: notification failed: the webhook answered HTTP 500"]
    assert webhook.payloads[-1]["result"] == "ok"

    refused = f"http://127.0.0.1:{free_port()}/hooks/{webhook.token}"
    use_webhook(deployment, refused)
    result = run(deployment, webhook.token, "--debug", "release", "second")
    assert warnings(result) == ["deployer: warning: notification failed: cannot connect to the webhook: Connection refused"]
    assert result.stdout.strip() == source_repo.sha("second")

    use_webhook(deployment, None)
    result = run(deployment, webhook.token, "activate", source_repo.sha("second"))
    assert warnings(result) == [
        f"deployer: warning: notification failed: the env file {deployment.env_file} does not define DEPLOYER_WEBHOOK_URL"]
    assert deployment.current == source_repo.sha("second")


def test_check_names_a_webhook_variable_the_env_file_lacks(deployment):
    deployment.write_config(notify={"webhook_env": "DEPLOYER_WEBHOOK_URL"})

    result = deployment.deployer("check")

    assert result.returncode == 1
    assert "notify.webhook_env names DEPLOYER_WEBHOOK_URL" in result.stdout


# --- across servers: each server's own notification, and one for the whole fleet ---------------

def fleet_webhook(orchestrator, url: str) -> None:
    """notify: in servers.yml, the URL in an env file of the orchestrator's own (mode 0600)."""
    import yaml

    env_file = orchestrator.root / "orchestrator.env"
    env_file.write_text(f"FLEET_WEBHOOK_URL={url}\n")
    env_file.chmod(0o600)
    config = yaml.safe_load(orchestrator.config_file.read_text())
    config["notify"] = {"env_file": str(env_file), "webhook_env": "FLEET_WEBHOOK_URL", "timeout": TIMEOUT}
    orchestrator.config_file.write_text(yaml.safe_dump(config, sort_keys=False))


def test_a_deploy_across_servers_posts_once_per_server_and_once_for_the_fleet_with_one_deploy_id(
        orchestrator, deployment, second, webhook):
    for d in (deployment, second):
        use_webhook(d, webhook.url)
    fleet_webhook(orchestrator, webhook.url)
    sha = deployment.source.sha("base")

    result = orchestrator.run("deploy", "base")

    assert result.returncode == 0, result.stderr
    assert webhook.token not in result.stdout + result.stderr
    by_server = [p for p in webhook.payloads if p["servers"] != ["app1", "app2"]]
    fleet = [p for p in webhook.payloads if p["servers"] == ["app1", "app2"]]
    # Each server was asked to `release`, then to `activate`: its own two notifications.
    assert sorted(p["event"] for p in by_server) == ["activate", "activate", "release", "release"], webhook.payloads
    assert len(fleet) == 1, webhook.payloads
    whole = fleet[0]
    assert {key: whole[key] for key in ("event", "sha", "result", "results", "user", "host")} == {
        "event": "deploy", "sha": sha, "result": "ok", "results": {"app1": "ok", "app2": "ok"},
        "user": getpass.getuser(), "host": socket.gethostname()}
    assert {p["deploy_id"] for p in by_server if p["event"] == "activate"} == {whole["deploy_id"]}


def test_a_failed_deploy_across_servers_posts_every_server_s_outcome_and_the_reason(
        orchestrator, deployment, second, webhook):
    assert orchestrator.run("deploy", "base").returncode == 0
    fleet_webhook(orchestrator, webhook.url)
    second.write_config(smoke={"url": f"http://127.0.0.1:{second.port}", "check_static": False, "timeout": 3,
                               "paths": ["/no-such-page/"]})  # app2's standby fails its smoke test

    result = orchestrator.run("deploy", "second")

    assert result.returncode == 1, result.stderr
    (whole,) = webhook.payloads
    assert (whole["event"], whole["sha"], whole["result"]) == ("deploy", deployment.source.sha("second"), "failed")
    assert whole["results"] == {"app1": "failed", "app2": "failed"}
    assert whole["reason"].startswith("app2: "), whole["reason"]


def test_bad_input_across_servers_posts_nothing(orchestrator, webhook):
    fleet_webhook(orchestrator, webhook.url)
    assert orchestrator.run("deploy", "no-such-branch").returncode == 2
    assert webhook.payloads == []
