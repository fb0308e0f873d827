"""The multi-server e2e tier's machinery (docs/design.md §17): three booted containers on a
private network that the test makes, a load balancer on the host, the orchestrator's files.

- `Network`: an nspawn network zone (a bridge `vz-<zone>` that nspawn creates for the
  containers that join it), with the host's address on it; nothing on it leaves the host.
- `load_balancer()`: the host's nginx, HTTPS on 127.0.0.1, in front of both app servers' own
  nginx over HTTPS, never retrying a failed request on the other server.
- `Poller`: asks one server's front door for /healthz as fast as it answers and notes when it
  first names a release (the flip skew across servers).
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import e2e_machine as m


@dataclass
class Network:
    zone: str = field(default_factory=lambda: f"{m.ZONE_PREFIX}{secrets.token_hex(3)}")
    subnet: str = field(default_factory=lambda: _free_subnet())

    @property
    def bridge(self) -> str:
        return f"vz-{self.zone}"

    @property
    def nspawn_args(self) -> tuple[str, ...]:
        return (f"--network-zone={self.zone}",)

    def address(self, host: int) -> str:
        return f"{self.subnet}.{host}"

    def up_on_host(self) -> None:
        """Once a container has joined, the bridge exists: give the host its address on it."""
        deadline = time.monotonic() + 30
        while subprocess.run(["ip", "link", "show", self.bridge], capture_output=True).returncode != 0:
            assert time.monotonic() < deadline, f"nspawn did not create {self.bridge}"
            time.sleep(0.2)
        subprocess.run(["ip", "addr", "replace", f"{self.address(1)}/24", "dev", self.bridge], check=True)
        subprocess.run(["ip", "link", "set", self.bridge, "up"], check=True)

    def remove(self) -> None:
        """nspawn removes the zone's bridge when its last container exits in order, not when
        one had to be killed: then it is removed here."""
        subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True)

    def join(self, c: m.Container, host: int) -> str:
        """The container's end (host0) gets its address; returns it."""
        address = self.address(host)
        c.run(f"ip addr replace {address}/24 dev host0 && ip link set host0 up")
        return address


def _free_subnet() -> str:
    """A 10.231.N.0/24 no interface of the host is on (another session's zone, a stale one)."""
    used = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True).stdout
    start = os.getpid() % 250
    for step in range(250):
        subnet = f"10.231.{(start + step) % 250 + 1}"
        if f" {subnet}." not in used:
            return subnet
    raise RuntimeError("no free 10.231.N.0/24 subnet on this host")


def wait_for_port(address: str, port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((address, port), timeout=2).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing answers on {address}:{port}"
            time.sleep(0.2)


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)], check=True)
    return path


def start_sshd(c: m.Container, deploy_public_key: str) -> str:
    """sshd with this container's own host keys, the deploy key authorized; returns its host key."""
    c.run("ssh-keygen -A >/dev/null && systemctl enable --now ssh.service >/dev/null 2>&1")
    c.run("install -d -o deploy -g deploy -m 0700 /home/deploy/.ssh")
    c.write("/home/deploy/.ssh/authorized_keys", deploy_public_key, owner="deploy:deploy", mode="0600")
    return " ".join(c.read("/etc/ssh/ssh_host_ed25519_key.pub").split()[:2])


def start_postgresql(c: m.Container, subnet: str, password: str) -> None:
    """The database server: listening on the private network, one role and database for the site."""
    c.run(
        "set -e; conf=$(ls -d /etc/postgresql/*/main); "
        "echo \"listen_addresses = '*'\" >> $conf/postgresql.conf; "
        f"echo 'host skinmenu skinmenu {subnet}.0/24 scram-sha-256' >> $conf/pg_hba.conf; "
        "systemctl enable --now postgresql.service >/dev/null 2>&1; "
        "for i in $(seq 100); do runuser -u postgres -- pg_isready -q && break; sleep 0.2; done",
        shell="/bin/bash")
    c.run(f"runuser -u postgres -- psql -q -c \"CREATE ROLE skinmenu LOGIN PASSWORD '{password}'\"")
    c.run("runuser -u postgres -- createdb --owner skinmenu skinmenu")


def point_at_database(c: m.Container, url: str, db_address: str) -> None:
    """The app server's side of the guide's PostgreSQL section: DATABASE_URL in the env file, and
    the colours' sandbox opened to exactly the database server."""
    c.run(f"printf 'DATABASE_URL=%s\\n' {url!r} >> /etc/skinmenu/skinmenu.env")
    dropin = ("[Service]\nPrivateNetwork=no\nRestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\n"
              f"IPAddressAllow={db_address}/32\n")
    c.write("/etc/systemd/system/skinmenu@.service.d/database.conf", dropin)
    c.run("systemctl daemon-reload")


@dataclass
class LoadBalancer:
    process: subprocess.Popen
    port: int
    directory: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_balancer(tls: Path, backends: list[str]) -> LoadBalancer:
    """nginx on the host in front of the app servers (HTTPS both sides, certificates checked).
    `proxy_next_upstream off`: a request that fails on one server is a failed request, never
    quietly retried on the other, so "0 failed requests" means what it says."""
    directory = Path(m.WORK_ROOT) / f"skinmenu-e2e-lb-{os.getpid()}-{secrets.token_hex(3)}"
    directory.mkdir(parents=True)
    port = _free_port()
    upstreams = "\n".join(f"        server {address}:443;" for address in backends)
    (directory / "nginx.conf").write_text(f"""\
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log {directory}/access.log;
    client_body_temp_path {directory}/body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
    upstream apps {{
{upstreams}
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name {m.DOMAIN};
        ssl_certificate {tls}/fullchain.pem;
        ssl_certificate_key {tls}/privkey.pem;
        location / {{
            proxy_pass https://apps;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host {m.DOMAIN};
            proxy_ssl_server_name on;
            proxy_ssl_name {m.DOMAIN};
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {tls}/ca.crt;
            proxy_ssl_session_reuse on;
            proxy_next_upstream off;
            proxy_read_timeout 60s;
        }}
    }}
}}
""")
    process = subprocess.Popen(["nginx", "-c", str(directory / "nginx.conf"), "-p", str(directory),
                                "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)
    m.write_owner(directory, nginx=process.pid)  # a killed session's reaper ends it (reap_stale)
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return LoadBalancer(process, port, directory)
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the load balancer did not start: {process.stderr.read().decode()[-2000:]}")
            time.sleep(0.1)


class Poller:
    """One server's front door asked for /healthz in a loop; `first_seen[sha]` is when (monotonic)
    it first answered with that release."""

    def __init__(self, address: str, cacert: Path) -> None:
        self.address = address
        self.context = ssl.create_default_context(cafile=str(cacert))
        self.first_seen: dict[str, float] = {}
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _connect(self) -> http.client.HTTPSConnection:
        connection = http.client.HTTPSConnection(self.address, 443, context=self.context, timeout=10)
        connection.sock = self.context.wrap_socket(socket.create_connection((self.address, 443), timeout=10),
                                                   server_hostname=m.DOMAIN)
        return connection

    def _run(self) -> None:
        connection = None
        while not self._stop.is_set():
            try:
                connection = connection or self._connect()
                connection.request("GET", "/healthz", headers={"Host": m.DOMAIN})
                response = connection.getresponse()
                body = response.read()
                at = time.monotonic()
                if response.status == 200:
                    self.first_seen.setdefault(json.loads(body)["release"], at)
            except (OSError, http.client.HTTPException, ValueError, KeyError):
                self.errors += 1
                connection = None
                time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)
