"""A private OpenSSH server on 127.0.0.1 for the orchestrator's tests (docs/design.md §13, §17).

The suite starts it itself, as the suite's user, on a free port with its own host key and its
own authorized client key, all in a temporary directory; nothing of the machine's own SSH setup
(its sshd, ~/.ssh) is read or changed. The orchestrator then connects with strict host keys,
exactly as it would to a real server.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


@dataclass
class SshServer:
    root: Path
    port: int
    user: str
    host_key: Path  # the server's private host key
    client_key: Path  # the orchestrator's identity, authorized on the server
    known_hosts: Path  # holds this server's real host key, as `[127.0.0.1]:port`
    process: subprocess.Popen

    def known_hosts_with(self, name: str, public_key_line: str) -> Path:
        """A known_hosts file that lists `public_key_line` for this server instead of its key."""
        path = self.root / name
        path.write_text(f"[127.0.0.1]:{self.port} {public_key_line}\n")
        return path

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def keygen(path: Path, kind: str = "ed25519") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", path.name, "-f", str(path)], check=True)
    return path


def public_line(key: Path) -> str:
    """`<type> <base64>` of a key's public half, as known_hosts lists it."""
    return " ".join(Path(f"{key}.pub").read_text().split()[:2])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(root: Path) -> SshServer:
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    host_key = keygen(root / "ssh_host_ed25519_key")
    client_key = keygen(root / "client_ed25519")
    authorized = root / "authorized_keys"
    authorized.write_text(Path(f"{client_key}.pub").read_text())
    authorized.chmod(0o600)
    user = _user()
    port = _free_port()
    config = root / "sshd_config"
    config.write_text(
        f"Port {port}\n"
        "ListenAddress 127.0.0.1\n"
        f"HostKey {host_key}\n"
        f"PidFile {root / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {authorized}\n"
        f"AllowUsers {user}\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\n"
        "UsePAM no\n"
        "StrictModes no\n"  # pytest's temp directories are not owned the way sshd wants for ~/.ssh
        "PrintMotd no\n"
        "LogLevel ERROR\n"
        + _session_env()
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    log = open(root / "sshd.log", "wb")
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
    known_hosts = root / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {public_line(host_key)}\n")
    server = SshServer(root, port, user, host_key, client_key, known_hosts, process)
    _wait_listening(server, root / "sshd.log")
    return server


_PASSED_ON = ("SSL_CERT_", "PIP_", "UV_", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO",
              "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


def _session_env() -> str:
    """The machine's package-index and CA settings, given to SSH sessions as a real server has
    its own (sshd's SetEnv): a build over SSH must reach the same index as one run locally."""
    pairs = [f'{name}="{value}"' for name, value in sorted(os.environ.items())
             if name.startswith(_PASSED_ON) and '"' not in value and "\n" not in value]
    return f"SetEnv {' '.join(pairs)}\n" if pairs else ""


def _user() -> str:
    import pwd
    return pwd.getpwuid(os.geteuid()).pw_name


def _wait_listening(server: SshServer, log: Path, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"sshd exited with {server.process.returncode}: {log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=1) as conn:
                if conn.recv(4).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"sshd did not listen on {server.port} within {timeout}s: {log.read_text()}")
