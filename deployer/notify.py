"""Webhook notifications (docs/design.md §15): one JSON POST per finished command that changed
something, or failed trying.

The webhook URL is a secret: it lives in the env file under the variable `notify.webhook_env`
names, and it is never printed — not in the warning, not with --debug. A notification that
fails is one warning line on stderr; it never changes the exit code and never costs more than
`notify.timeout` seconds in total.

What a command did is read from deploy_to before and after it ran (history lines it appended,
release directories it created or removed), so the commands themselves know nothing of this.
"""

from __future__ import annotations

import getpass
import os
import socket
import sys
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator


from deployer import __version__, envfile, git, history, releases
from deployer.config import Config, NotifyConfig
from deployer.errors import BadInput, DeployError, LockHeld, one_line
from deployer.paths import SHA_RE, Paths, current_sha

ACTIVATIONS = ("activate", "deploy", "rollback")


def warn(reason: str) -> None:
    print(f"deployer: warning: notification failed: {one_line(reason)}", file=sys.stderr, flush=True)


class Watch:
    """Watches one command run under the deploy lock and sends what it did once the lock is released.

        watch = Watch(config, paths, "deploy", (ref,))
        try:
            with lock, watch.running():
                run the command
        finally:
            watch.send()
    """

    def __init__(self, config: Config, paths: Paths, command: str, args: tuple) -> None:
        self.config = config
        self.paths = paths
        self.command = command
        self.args = args
        self.event: dict | None = None

    @contextmanager
    def running(self) -> Iterator[None]:
        if self.config.notify is None:
            yield
            return
        started = time.monotonic()
        before = _snapshot(self.paths)
        try:
            yield
        except BaseException as exc:
            self.event = self._describe(before, started, exc)
            raise
        self.event = self._describe(before, started, None)

    def send(self) -> None:
        if self.event is not None and self.config.notify is not None:
            post(self.config, self.event)

    def _describe(self, before: dict, started: float, exc: BaseException | None) -> dict | None:
        try:
            return event(self.command, self.args, self.config, self.paths, before, _snapshot(self.paths),
                         time.monotonic() - started, exc)
        except Exception as error:  # describing the run must never hide how the run itself ended
            warn(f"could not describe the run ({type(error).__name__})")
            return None


def _snapshot(paths: Paths) -> dict:
    """History length, `current`, and each release directory's inode (a build or rebuild renames
    a new directory into place, so a changed inode means a new build)."""
    try:
        dirs = {entry.name: entry.inode() for entry in os.scandir(paths.releases) if SHA_RE.fullmatch(entry.name)}
    except FileNotFoundError:
        dirs = {}
    return {"history": len(history.read(paths)), "current": current_sha(paths), "releases": dirs}


def is_failure(exc: BaseException | None) -> bool:
    """A run that failed with exit 1 is notified; bad input (2), a held lock (3) and Ctrl-C before
    anything changed (an interrupt after a change is re-raised as an OperationFailed) are not."""
    return exc is not None and not isinstance(exc, (BadInput, LockHeld, KeyboardInterrupt, SystemExit))


def event(
    command: str, args: tuple, config: Config, paths: Paths, before: dict, after: dict,
    seconds: float, exc: BaseException | None,
) -> dict | None:
    """The JSON object for a finished command, or None when it changed nothing and did not fail."""
    entries = history.read(paths)
    activation = next((e for e in reversed(entries[before["history"]:]) if e.get("action") in ACTIVATIONS), None)
    built = [sha for sha, inode in after["releases"].items() if before["releases"].get(sha) != inode]
    removed = sorted(set(before["releases"]) - set(after["releases"]))
    failed = is_failure(exc)
    changed = bool(removed) if command == "prune" else bool(activation or built)
    if not (changed or failed):
        return None
    if activation is not None:
        sha, previous, result = activation["to"], activation.get("from"), activation.get("result", history.FAILED)
    elif command == "prune":
        sha, previous, result = after["current"], None, history.FAILED if failed else history.OK
    else:
        sha = built[0] if built else _attempted(command, args, paths, entries, before["current"])
        previous, result = before["current"], history.FAILED if failed else history.OK
    host = socket.gethostname()
    payload = {
        "event": command,
        "app": config.app,
        "sha": sha,
        "previous": previous,
        "result": result,
        "seconds": round(seconds, 2),
        "user": getpass.getuser(),
        "host": host,
        "servers": [host],
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if activation is not None and activation.get("deploy_id"):
        payload["deploy_id"] = activation["deploy_id"]  # the same on every server of one deploy (§13)
    if command == "prune":
        payload["removed"] = removed
    if exc is not None and failed:
        payload["reason"] = _reason(exc)
    return payload


def _reason(exc: BaseException) -> str:
    if isinstance(exc, DeployError):
        return exc.message
    if isinstance(exc, OSError) and exc.strerror:
        return one_line(f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror)
    return type(exc).__name__


def _attempted(command: str, args: tuple, paths: Paths, entries: list[dict], live: str | None) -> str | None:
    """The release a failed run was about, when it failed before recording anything; None when
    it failed before that was known (an unknown ref never gets here: that is bad input)."""
    try:
        if command in ("release", "deploy"):
            return git.resolve(paths, args[0])
        if command == "activate":
            return releases.find(paths, args[0])
        if command == "rollback":
            return releases.find(paths, args[0]) if args[0] else history.rollback_target(entries, live)
    except (DeployError, OSError):
        pass
    return None


def post(config: Config, payload: dict) -> None:
    """POST `payload` to the webhook; at most notify.timeout seconds; never raises."""
    assert config.notify is not None
    send(config.notify, config.env_file, payload)


def send(notify: NotifyConfig, env_file: Path, payload: dict) -> None:
    """POST `payload` to the URL the env file holds under notify.webhook_env; never raises."""
    try:
        url = envfile.load(env_file, ()).get(notify.webhook_env, "")
    except DeployError as exc:  # envfile messages name the file and a line, never a value
        warn(exc.message)
        return
    if not url:
        warn(f"the env file {env_file} does not define {notify.webhook_env}")
        return
    outcome: dict[str, str] = {}
    sender = threading.Thread(target=_post, args=(url, payload, notify, outcome), daemon=True)
    try:
        sender.start()
        # The hard deadline: requests' timeouts bound each connect and each read, not the total
        # (a name lookup or a server trickling bytes could take longer). A daemon thread left
        # behind dies with the process.
        sender.join(notify.timeout)
    except BaseException:  # Ctrl-C while waiting: the command's own outcome still gets reported
        warn("interrupted while sending")
        return
    if sender.is_alive():
        warn(f"no answer from the webhook within {notify.timeout:g}s")
    elif outcome.get("error"):
        warn(outcome["error"].replace(url, "<webhook URL>"))


def _post(url: str, payload: dict, notify, outcome: dict) -> None:
    import requests  # here, not at the top: importing it costs every command ~0.1 s (docs/benchmarks.md)

    try:
        with requests.post(
            url, json=payload, timeout=(notify.timeout, notify.timeout), allow_redirects=False,
            headers={"User-Agent": f"skinmenu-deployer/{__version__}"},
        ) as resp:
            if not 200 <= resp.status_code < 300:
                outcome["error"] = f"the webhook answered HTTP {resp.status_code}"
    except requests.Timeout:
        outcome["error"] = f"no answer from the webhook within {notify.timeout:g}s"
    except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema,
            requests.exceptions.URLRequired, ValueError):
        outcome["error"] = f"the value of {notify.webhook_env} in the env file is not a usable http(s) URL"
    except requests.ConnectionError as exc:
        outcome["error"] = f"cannot connect to the webhook: {_os_reason(exc)}"
    except BaseException as exc:  # str(exc) of a requests error names the URL: only the type is shown
        outcome["error"] = f"{type(exc).__name__} while sending"


def _os_reason(exc: BaseException) -> str:
    """The innermost OS-level reason (e.g. 'Connection refused'), found without str() of the
    requests/urllib3 exceptions, which embed the URL."""
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        item = todo.pop(0)
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, OSError) and item.strerror:
            return item.strerror
        todo += [*item.args, getattr(item, "reason", None), item.__cause__, item.__context__]
    return type(exc).__name__
