"""The production-real smoke test (docs/design.md §9): through the front door, Host and SNI intact.
Besides §9's checks, every path in `smoke.paths` must answer 200 (docs/design.md §15).

Connections go to `smoke.resolve` when set (curl --resolve semantics): TLS is negotiated for the
URL's host name and the certificate checked against it, and the Host header names it too.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import urllib3
import urllib3.connection

from deployer.config import SmokeConfig
from deployer.errors import OperationFailed


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    connect_to: str
    prefix: str

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


def target(smoke: SmokeConfig) -> Target:
    parts = urlsplit(smoke.url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return Target(parts.scheme, parts.hostname or "", port, smoke.resolve or parts.hostname or "", parts.path.rstrip("/"))


def pool(smoke: SmokeConfig, timeout: float = 5.0) -> urllib3.connectionpool.HTTPConnectionPool:
    t = target(smoke)
    http_timeout = urllib3.Timeout(connect=timeout, read=timeout)
    if t.scheme == "https":
        return urllib3.HTTPSConnectionPool(
            t.connect_to,
            t.port,
            server_hostname=t.host,
            assert_hostname=t.host,
            cert_reqs="CERT_REQUIRED",
            ca_certs=str(smoke.cacert) if smoke.cacert else None,
            timeout=http_timeout,
            retries=False,
        )
    return urllib3.HTTPConnectionPool(t.connect_to, t.port, timeout=http_timeout, retries=False)


class _UnixConnection(urllib3.connection.HTTPConnection):
    socket_path = ""

    def _new_conn(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout if isinstance(self.timeout, (int, float)) else 5.0)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        return sock


def socket_pool(smoke: SmokeConfig, socket_path: Path, timeout: float = 5.0) -> urllib3.HTTPConnectionPool:
    """Straight to one gunicorn's unix socket, with the headers nginx would send (Host, and
    X-Forwarded-Proto from the front door's scheme): the standby colour, before the public sees it."""
    connection = type("UnixConnection", (_UnixConnection,), {"socket_path": str(socket_path)})
    pool_ = urllib3.HTTPConnectionPool("localhost", timeout=urllib3.Timeout(connect=timeout, read=timeout), retries=False)
    pool_.ConnectionCls = connection
    pool_.extra_headers = {"X-Forwarded-Proto": target(smoke).scheme}
    return pool_


def get(smoke: SmokeConfig, conn, path: str) -> urllib3.BaseHTTPResponse:
    t = target(smoke)
    headers = {"Host": t.host_header, **getattr(conn, "extra_headers", {})}
    return conn.request("GET", t.prefix + path, headers=headers, redirect=False)


def pick_static_file(release: Path) -> tuple[str, Path]:
    """One hashed file of the release's own (its CSS first), as URL path and file on disk."""
    manifest = json.loads((release / "staticfiles" / "staticfiles.json").read_text())
    paths = manifest.get("paths", {})
    if not paths:
        raise OperationFailed("the release's staticfiles.json lists no files")
    ranked = sorted(paths, key=lambda name: (not name.startswith("css/"), name.count("/"), name))
    hashed = paths[ranked[0]]
    return f"/static/{hashed}", release / "staticfiles" / hashed


def check_once(smoke: SmokeConfig, conn, sha: str, static: tuple[str, Path] | None) -> None:
    resp = get(smoke, conn, "/admin/login/")
    if resp.status != 200:
        raise OperationFailed(f"GET /admin/login/ answered {resp.status}, expected 200")
    resp = get(smoke, conn, "/healthz")
    if resp.status != 200:
        raise OperationFailed(f"GET /healthz answered {resp.status}, expected 200")
    try:
        served = json.loads(resp.data).get("release")
    except (ValueError, AttributeError):
        raise OperationFailed("GET /healthz did not answer JSON") from None
    if served != sha:
        raise OperationFailed(f"/healthz reports release {str(served)[:12]}, expected {sha[:12]}")
    if static:
        url_path, on_disk = static
        resp = get(smoke, conn, url_path)
        if resp.status != 200:
            raise OperationFailed(f"GET {url_path} answered {resp.status}, expected 200")
        if resp.data != on_disk.read_bytes():
            raise OperationFailed(f"GET {url_path} served different bytes than the release's file")
    for path in smoke.paths:
        resp = get(smoke, conn, path)
        if resp.status != 200:
            raise OperationFailed(f"GET {path} (smoke.paths) answered {resp.status}, expected 200")


def run(smoke: SmokeConfig, sha: str, release: Path, socket_path: Path | None = None) -> float:
    """Retry with a short backoff until every check passes or smoke.timeout runs out. With
    `socket_path`, straight to that gunicorn (no static file: nginx serves those)."""
    static = pick_static_file(release) if smoke.check_static and socket_path is None else None
    started = time.monotonic()
    deadline = started + smoke.timeout
    delay = 0.05
    conn = pool(smoke) if socket_path is None else socket_pool(smoke, socket_path)
    where = smoke.url if socket_path is None else f"{socket_path} (Host {target(smoke).host_header})"
    while True:
        try:
            check_once(smoke, conn, sha, static)
            return time.monotonic() - started
        except (OperationFailed, urllib3.exceptions.HTTPError, OSError) as exc:
            reason = exc.message if isinstance(exc, OperationFailed) else f"{type(exc).__name__}: {exc}"
        if time.monotonic() + delay > deadline:
            raise OperationFailed(f"smoke test of {where} failed after {smoke.timeout:.0f}s: {reason}")
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


def health(smoke: SmokeConfig) -> dict:
    """One GET of /healthz through the configured front door: {"ok", "http_status", "release"}
    or {"ok": False, "error"}. Never raises for a site that is down."""
    try:
        resp = get(smoke, pool(smoke, timeout=5), "/healthz")
        body = json.loads(resp.data) if resp.status in (200, 503) else {}
        release = body.get("release") if isinstance(body, dict) else None
        return {"ok": resp.status == 200, "http_status": resp.status, "release": release}
    except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
