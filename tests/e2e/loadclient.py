"""A load client run INSIDE the e2e container (stdlib only): requests through nginx over HTTPS,
continuously, until a stop file appears or a bound is hit; prints one JSON summary.

Each worker thread keeps one TLS connection alive (like a browser) and opens a new one after
any error or when nginx closes it. A request fails when it raises, times out, or answers
anything but 200. The release each /healthz answer names is counted (`releases`), so a test can
show which releases the public was served by. Usage:

    python3 loadclient.py --cacert CA --stop FILE --path / --path /healthz [--workers 4]
"""

import argparse
import http.client
import json
import os
import socket
import ssl
import sys
import threading
import time


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="skinmenu.example.com")
    ap.add_argument("--connect", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=443)
    ap.add_argument("--cacert", required=True)
    ap.add_argument("--path", action="append", required=True)
    ap.add_argument("--stop", required=True, help="stop when this file exists")
    ap.add_argument("--ready", help="touch this file once the first request has succeeded")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--max-seconds", type=float, default=300)
    ap.add_argument("--max-requests", type=int, default=200000)
    ap.add_argument("--timeout", type=float, default=60)
    args = ap.parse_args()

    ctx = ssl.create_default_context(cafile=args.cacert)
    lock = threading.Lock()
    stats = {"count": 0, "failed": 0, "worst": 0.0, "worst_path": None, "errors": [], "by_status": {},
             "releases": {}, "latencies": []}
    deadline = time.monotonic() + args.max_seconds
    stop = threading.Event()

    def connect():
        sock = socket.create_connection((args.connect, args.port), timeout=args.timeout)
        tls = ctx.wrap_socket(sock, server_hostname=args.host)
        conn = http.client.HTTPConnection(args.host, args.port, timeout=args.timeout)
        conn.sock = tls
        return conn

    def worker(index: int) -> None:
        conn = None
        n = index
        while not stop.is_set():
            path = args.path[n % len(args.path)]
            n += 1
            started = time.monotonic()
            error = None
            status = None
            try:
                if conn is None:
                    conn = connect()
                conn.request("GET", path, headers={"Host": args.host, "User-Agent": "skinmenu-e2e-load"})
                resp = conn.getresponse()
                body = resp.read()
                status = resp.status
                release = None
                if path.startswith("/healthz") and status == 200:
                    release = str(json.loads(body).get("release"))
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
                if status != 200:
                    error = f"HTTP {status}"
            except Exception as exc:  # noqa: BLE001 - every failure counts
                release = None
                error = f"{type(exc).__name__}: {exc}"
                if conn is not None:
                    conn.close()
                conn = None
            elapsed = time.monotonic() - started
            with lock:
                stats["count"] += 1
                stats["latencies"].append(elapsed)
                key = str(status) if status is not None else "error"
                stats["by_status"][key] = stats["by_status"].get(key, 0) + 1
                if release is not None:
                    stats["releases"][release] = stats["releases"].get(release, 0) + 1
                if elapsed > stats["worst"]:
                    stats["worst"], stats["worst_path"] = elapsed, path
                if error:
                    stats["failed"] += 1
                    if len(stats["errors"]) < 20:
                        stats["errors"].append({"path": path, "error": error, "at": round(time.time(), 3)})
                elif args.ready and stats["count"] - stats["failed"] == 1:
                    open(args.ready, "w").close()
                if stats["count"] >= args.max_requests:
                    stop.set()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(args.workers)]
    started = time.monotonic()
    for t in threads:
        t.start()
    while not stop.is_set():
        if os.path.exists(args.stop) or time.monotonic() > deadline:
            stop.set()
        time.sleep(0.05)
    for t in threads:
        t.join(args.timeout + 5)
    lat = sorted(stats.pop("latencies"))
    summary = {
        **stats,
        "seconds": round(time.monotonic() - started, 2),
        "worst_ms": round(stats.pop("worst") * 1000, 1),
        "p50_ms": round(lat[len(lat) // 2] * 1000, 1) if lat else None,
        "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, 1) if lat else None,
        "bounded": time.monotonic() > deadline or stats["count"] >= args.max_requests,
    }
    json.dump(summary, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
