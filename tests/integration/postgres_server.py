"""A real PostgreSQL server for the tests, started by the suite itself (docs/design.md §14, §17).

`initdb` + `pg_ctl` on a fresh temp directory and a free port on 127.0.0.1, with its unix socket
in that directory, password authentication (scram-sha-256) and one superuser. PostgreSQL refuses
to run as root, so under root the server runs as an unprivileged user (`nobody`). The binaries
come from the Debian `postgresql` package that scripts/install-system-deps installs.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

SUPERUSER = "skinmenu_admin"
UNPRIVILEGED = "nobody"


def server_bindir() -> Path | None:
    """The newest installed server's bin dir (Debian keeps initdb out of PATH)."""
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(candidates[-1]).parent if candidates else None


def client(name: str) -> str:
    """psql / pg_dump / pg_restore: the server's own copy first, else PATH."""
    bindir = server_bindir()
    if bindir and (bindir / name).exists():
        return str(bindir / name)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} is not installed (scripts/install-system-deps installs postgresql)")
    return found


def missing_reason() -> str | None:
    if server_bindir() is None:
        return "PostgreSQL is not installed (scripts/install-system-deps installs it as root)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    directory: Path
    port: int
    password: str
    bindir: Path

    @property
    def data(self) -> Path:
        return self.directory / "data"

    def url(self, database: str, *, user: str = SUPERUSER, password: str | None = None) -> str:
        secret = quote(self.password if password is None else password, safe="")
        return f"postgres://{user}:{secret}@127.0.0.1:{self.port}/{database}"

    def env(self, database: str = "postgres") -> dict[str, str]:
        """libpq variables for psql, pg_dump and pg_restore run by the tests."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        return {**base, "PGHOST": "127.0.0.1", "PGPORT": str(self.port), "PGUSER": SUPERUSER,
                "PGPASSWORD": self.password, "PGDATABASE": database}

    def psql(self, sql: str, database: str = "postgres") -> str:
        out = subprocess.run([client("psql"), "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql],
                             capture_output=True, text=True, env=self.env(database), timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"psql failed: {out.stderr.strip()}")
        return out.stdout.strip()

    def create_database(self, name: str) -> str:
        self.psql(f'CREATE DATABASE "{name}"')
        return name

    def clone_database(self, template: str, name: str) -> str:
        self.psql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return name

    def stop(self) -> None:
        _as_server_user([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"],
                        check=False)
        shutil.rmtree(self.directory, ignore_errors=True)


def _as_server_user(argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess:
    kwargs = {}
    if os.geteuid() == 0:
        entry = pwd.getpwnam(UNPRIVILEGED)
        kwargs = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "LC_", "LANG"))}
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd="/",
                         env={**env, "LANG": "C.UTF-8"}, **kwargs)
    if check and out.returncode != 0:
        raise RuntimeError(f"{Path(argv[0]).name} failed ({out.returncode}): {out.stdout}{out.stderr}")
    return out


def start() -> PostgresServer:
    bindir = server_bindir()
    if bindir is None:
        raise RuntimeError(missing_reason())
    directory = Path(tempfile.mkdtemp(prefix="skinmenu-pg-"))
    directory.chmod(0o755)  # the server user needs to reach its data dir; the data dir itself is 0700
    password = secrets.token_urlsafe(18) + "%@:/"  # characters a URL must escape
    pwfile = directory / "pwfile"
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:
        entry = pwd.getpwnam(UNPRIVILEGED)
        os.chown(directory, entry.pw_uid, entry.pw_gid)
        os.chown(pwfile, entry.pw_uid, entry.pw_gid)
    pwfile.chmod(0o600)
    server = PostgresServer(directory, _free_port(), password, bindir)
    try:
        _as_server_user([str(bindir / "initdb"), "-D", str(server.data), "-U", SUPERUSER, f"--pwfile={pwfile}",
                         "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])
        pwfile.unlink()
        options = (f"-p {server.port} -k {directory} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        _as_server_user([str(bindir / "pg_ctl"), "-D", str(server.data), "-l", str(directory / "server.log"),
                         "-o", options, "-w", "-t", "60", "start"])
    except BaseException:
        server.stop()
        raise
    return server
