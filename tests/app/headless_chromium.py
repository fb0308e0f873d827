"""A real headless Chromium driven over the DevTools protocol, with the standard library only.

`--remote-debugging-pipe`: Chromium reads commands on its fd 3 and writes answers and events
on its fd 4, JSON messages ending in a NUL byte (no websocket, no extra package). A `Tab`
records what a visitor's DevTools console would show: Content-Security-Policy violations
(the `securitypolicyviolation` DOM event, installed before any page script runs) and every
request that leaves for another origin.
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# Runs in every document before its own scripts; CDP-injected, so the page's CSP does not apply.
RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
    window.__cspViolations.push(`${e.effectiveDirective} blocked ${e.blockedURI || "(inline)"}`
        + ` at ${e.sourceFile || e.documentURI}:${e.lineNumber}`
        + (e.sample ? ` sample ${JSON.stringify(e.sample)}` : ""));
});
"""


def find_chromium() -> str | None:
    return next((path for name in CANDIDATES if (path := shutil.which(name))), None)


class Chromium:
    def __init__(self, binary: str, profile: Path):
        to_chromium_r, self._to_chromium = os.pipe()
        self._from_chromium, from_chromium_w = os.pipe()

        def as_fds_3_and_4():
            # High, distinct copies first: a pipe end may itself be fd 3 or 4.
            read_end = fcntl.fcntl(to_chromium_r, fcntl.F_DUPFD, 100)
            write_end = fcntl.fcntl(from_chromium_w, fcntl.F_DUPFD, 100)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        argv = [binary, "--headless", "--remote-debugging-pipe", f"--user-data-dir={profile}",
                "--no-first-run", "--no-default-browser-check", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "about:blank"]
        if os.geteuid() == 0:
            argv.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        profile.mkdir(parents=True, exist_ok=True)
        self.log = profile.parent / "chromium.log"
        with open(self.log, "wb") as log:  # not a pipe: nobody reads it until something fails
            self.process = subprocess.Popen(argv, preexec_fn=as_fds_3_and_4, close_fds=False,
                                            stdout=subprocess.DEVNULL, stderr=log)
        os.close(to_chromium_r)
        os.close(from_chromium_w)
        self._next_id = 0
        self._answers: dict[int, queue.Queue] = {}
        self._events: dict[str, queue.Queue] = {}
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        buffer = b""
        while chunk := os.read(self._from_chromium, 65536):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for raw in messages:
                message = json.loads(raw)
                if "id" in message:
                    self._answers[message["id"]].put(message)
                elif "sessionId" in message:
                    self._session_events(message["sessionId"]).put(message)

    def _session_events(self, session: str) -> queue.Queue:
        with self._lock:
            return self._events.setdefault(session, queue.Queue())

    def send(self, method: str, session: str | None = None, timeout: float = 30, **params):
        with self._lock:
            self._next_id += 1
            ident = self._next_id
            self._answers[ident] = queue.Queue()
        message = {"id": ident, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_chromium, json.dumps(message).encode() + b"\0")
        try:
            answer = self._answers[ident].get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"Chromium did not answer {method} within {timeout} s (its log: {self.log})") from None
        if "error" in answer:
            raise RuntimeError(f"Chromium: {method} failed: {answer['error']}")
        return answer["result"]

    def new_tab(self, origin: str) -> Tab:
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        return Tab(self, session, origin)

    def close(self):
        try:
            self.send("Browser.close", timeout=5)
        except (TimeoutError, RuntimeError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._to_chromium, self._from_chromium):
            try:
                os.close(fd)
            except OSError:
                pass


class Tab:
    """One page. `visit` loads a URL and waits until it has loaded and the network is quiet."""

    def __init__(self, browser: Chromium, session: str, origin: str):
        self.browser, self.session, self.origin = browser, session, origin
        self.events = browser._session_events(session)
        self.other_origins: list[str] = []
        self.document_headers: dict[str, dict[str, str]] = {}  # URL -> the page's response headers
        self._in_flight: set[str] = set()
        for domain in ("Page", "Network", "Runtime"):
            self.send(f"{domain}.enable")
        self.send("Page.addScriptToEvaluateOnNewDocument", source=RECORD_VIOLATIONS)

    def send(self, method: str, **params):
        return self.browser.send(method, session=self.session, **params)

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def _note(self, event: dict) -> str:
        method, params = event.get("method", ""), event.get("params", {})
        if method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            if url.startswith(("http:", "https:", "ws:", "wss:")) and not url.startswith(self.origin + "/"):
                self.other_origins.append(url)
            self._in_flight.add(params["requestId"])
        elif method == "Network.responseReceived" and params["type"] == "Document":
            headers = params["response"]["headers"]
            self.document_headers[params["response"]["url"]] = {k.lower(): v for k, v in headers.items()}
        elif method in ("Network.loadingFinished", "Network.loadingFailed"):
            self._in_flight.discard(params["requestId"])
        return method

    def wait_until_loaded(self, timeout: float = 30, quiet: float = 0.5):
        """The load event, then no request in flight for `quiet` seconds."""
        deadline = time.monotonic() + timeout
        loaded, quiet_since = False, None
        while time.monotonic() < deadline:
            try:
                method = self._note(self.events.get(timeout=0.1))
                loaded = loaded or method == "Page.loadEventFired"
                quiet_since = None
            except queue.Empty:
                if loaded and not self._in_flight:
                    quiet_since = quiet_since or time.monotonic()
                    if time.monotonic() - quiet_since >= quiet:
                        return
        raise TimeoutError(f"{self.url()} did not finish loading within {timeout} s")

    def visit(self, path: str):
        self.send("Page.navigate", url=self.origin + path)
        self.wait_until_loaded()

    def url(self) -> str:
        return self.evaluate("location.href")

    def csp_violations(self) -> list[str]:
        return self.evaluate("window.__cspViolations || ['(the recorder did not run)']")
