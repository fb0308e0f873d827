"""The orchestrator's executor (docs/design.md §13): every command it runs on a server goes
through here, over SSH with asyncssh or, for `ssh: local`, as a local child process.

Commands are argv lists built by the plain functions of deployer/argv.py (one per `deployer`
command a server is asked to run). Nothing runs through a local shell; over SSH the argv is quoted with
shlex.join, which is how any SSH client hands a command to the server's login shell.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import shlex
import warnings
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, TypeVar

from cryptography.utils import CryptographyDeprecationWarning

with warnings.catch_warnings():
    # cryptography warns, at asyncssh's import, that DSA is deprecated: noise on stderr of every
    # orchestrator run, before any step line (known_hosts and ssh.identity decide the key types).
    warnings.simplefilter("ignore", CryptographyDeprecationWarning)
    import asyncssh
    from asyncssh.public_key import get_default_certificate_algs, get_default_public_key_algs

from deployer import __version__
from deployer.argv import command_of, hold_lock_argv, version_argv
from deployer.errors import BadInput, DeployError, LockHeld, OperationFailed, one_line, shown
from deployer.fleet import FleetConfig, Server
from deployer.proc import tail

COMMAND_TIMEOUT = 600.0  # fleet.Timeouts.command
_VERSION = re.compile(r"deployer, version (\S+)")


# -- running them --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Result:
    argv: list[str]
    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


class Connection:
    """One server, reached over SSH (or locally for `ssh: local`). Open it with `connect`."""

    def __init__(self, server: Server, ssh: asyncssh.SSHClientConnection | None,
                 command_timeout: float = COMMAND_TIMEOUT) -> None:
        self.server = server
        self._ssh = ssh
        self.command_timeout = command_timeout  # timeouts.command: version, status, list, prune
        self.lock: HeldLock | None = None  # taken by lock_all

    async def run(self, argv: list[str], timeout: float | None = None, token: str | None = None) -> Result:
        """Run a command to its end. With `token` (a command under the orchestrator's lock), the
        token is its stdin's only line; else its stdin is empty."""
        timeout = timeout or self.command_timeout
        stdin = token_line(token) if token else None
        try:
            if self._ssh is None:
                return await _run_local(argv, timeout, stdin)
            done = await self._ssh.run(shlex.join(argv), check=False, timeout=timeout,
                                       **({"input": stdin} if stdin else {"stdin": asyncssh.DEVNULL}))
            status = done.exit_status if done.exit_status is not None else 255
            return Result(argv, status, _text(done.stdout), _text(done.stderr))
        except (asyncssh.TimeoutError, asyncio.TimeoutError) as exc:
            raise OperationFailed(f"{self.server.name}: `deployer {command_of(argv)}` timed out after {timeout:g}s") from exc
        except (asyncssh.Error, OSError) as exc:
            raise OperationFailed(f"{self.server.name}: connection lost while running `deployer {command_of(argv)}`: {_why(exc)}") from exc

    async def deployer_json(self, argv: list[str]) -> Any:
        """Run a `deployer … --json` command and return its answer; a failure names the server."""
        result = await self.run(argv)
        if not result.ok:
            raise remote_failure(self.server, result)
        try:
            return json.loads(result.stdout)
        except ValueError:
            raise OperationFailed(f"{self.server.name}: `deployer {command_of(argv)}` did not answer JSON",
                                  details=tail(result.stdout + result.stderr)) from None

    async def start(self, argv: list[str], token: str | None = None) -> "Process":
        """Start a command with its stdin, stdout and stderr open to us; with `token` (a command
        under the orchestrator's lock), the token is the first line on its stdin."""
        try:
            if self._ssh is None:
                raw = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.PIPE,
                                                           stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            else:
                raw = await self._ssh.create_process(shlex.join(argv), encoding=None)  # bytes, as a local child
        except (asyncssh.Error, OSError) as exc:
            raise OperationFailed(f"{self.server.name}: cannot start `deployer {command_of(argv)}`: {_why(exc)}") from exc
        process = Process(raw)
        if token:
            process.write(token_line(token))
        return process

    async def run_streaming(self, argv: list[str], show: Callable[[str], Any], timeout: float,
                            token: str | None = None) -> Result:
        """Run a command, handing its stderr lines to `show` as they come (live progress)."""
        proc = await self.start(argv, token)
        lines: list[str] = []
        pump = asyncio.ensure_future(proc.pump_stderr(lambda line: (lines.append(line), show(line))))
        try:
            out = await asyncio.wait_for(proc.read("stdout"), timeout)
            status = await asyncio.wait_for(proc.wait(), timeout)
        except asyncio.TimeoutError:
            proc.close_stdin()
            pump.cancel()
            last = f" (its last line: {shown(lines[-1].strip())})" if lines else ""
            raise OperationFailed(f"{self.server.name}: `deployer {command_of(argv)}` gave no answer "
                                  f"within {timeout:g}s{last}") from None
        await settled(pump)
        return Result(argv, status, out, "\n".join(lines))

    async def hold_lock(self, token: str, timeout: float) -> "HeldLock":
        """Take this server's deploy lock for the orchestrator: a remote `hold-lock` process that
        keeps it while we keep writing to it, so the lock goes when this connection goes."""
        argv = hold_lock_argv(self.server)
        proc = await self.start(argv, token)
        try:
            first = await asyncio.wait_for(proc.readline("stdout"), timeout)
        except asyncio.TimeoutError:
            proc.close_stdin()
            raise LockHeld(f"{self.server.name}: its lock was not taken within {timeout:g}s",
                           hint="nothing was changed; `deployer status` shows who holds it") from None
        held = HeldLock(self.server, proc)
        if first.strip().startswith('{"locked": true'):
            self.lock = held
            return held
        status, err = await held.release()
        raise remote_failure(self.server, Result(argv, status, first, err))

    async def let_go(self) -> None:
        """Release this server's lock now: a command of ours that has gone silent there is
        stopped by its server (deployer/lock.py) and puts back what it changed."""
        if self.lock is not None:
            await self.lock.release()

    async def close(self) -> None:
        if self._ssh is not None:
            self._ssh.close()
            await self._ssh.wait_closed()


LINE_LIMIT = 1024 * 1024  # bytes of one line kept: far more than any event line a server says
SHOWN_LINE = 2000  # bytes of one line of a server's output shown to the operator
_CHUNK = 64 * 1024


class Process:
    """A running command on a server (a local child, or an SSH channel), read line by line."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._local = isinstance(raw, asyncio.subprocess.Process)
        self._streams = {"stdout": Lines(raw.stdout), "stderr": Lines(raw.stderr)}

    async def readline(self, stream: str, limit: int = LINE_LIMIT) -> str:
        """The next line of "stdout" or "stderr"; "" at its end (or when the connection is gone).
        A line longer than `limit` bytes comes back cut, saying how much was cut."""
        return _text(await self._streams[stream].readline(limit))

    async def pump_stderr(self, show: Callable[[str], Any]) -> None:
        """Hand each stderr line (without its newline, cut to SHOWN_LINE bytes) to `show` as it
        comes, until its end."""
        while line := await self.readline("stderr", SHOWN_LINE):
            show(line.rstrip("\n"))

    async def read(self, stream: str) -> str:
        return _text(await self._streams[stream].read_all())

    def write(self, text: str) -> bool:
        """Write to its stdin; False when it is gone."""
        try:
            self._raw.stdin.write(text.encode())
            return True
        except (asyncssh.Error, OSError, RuntimeError):
            return False

    def close_stdin(self) -> None:
        try:
            if self._local:
                self._raw.stdin.close()
            else:
                self._raw.stdin.write_eof()
        except (asyncssh.Error, OSError, RuntimeError):
            pass

    async def wait(self) -> int:
        """Its exit status; 255 when the connection went before it said."""
        try:
            if self._local:
                return await self._raw.wait()
            done = await self._raw.wait()
            return done.exit_status if done.exit_status is not None else 255
        except (asyncssh.Error, OSError):
            return 255


class Lines:
    """One output stream of a process, read in chunks and cut into lines. A line of any length
    is safe: asyncio's own readline raises ValueError past 64 KiB (a hook printing one long
    line would have crashed the orchestrator); past `limit` bytes the rest of a line is dropped
    and counted."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._ended = False

    async def readline(self, limit: int) -> bytes:
        """The next line with its newline (the last one may have none); b"" at the end."""
        while b"\n" not in self._buffer and not self._ended:
            if len(self._buffer) > limit:
                return await self._cut_line(limit)
            await self._fill()
        end = self._buffer.find(b"\n") + 1 or len(self._buffer)
        if end > limit + 1:
            return await self._cut_line(limit)
        line = bytes(self._buffer[:end])
        del self._buffer[:end]
        return line

    async def read_all(self) -> bytes:
        while not self._ended:
            await self._fill()
        rest = bytes(self._buffer)
        self._buffer.clear()
        return rest

    async def _cut_line(self, limit: int) -> bytes:
        """The first `limit` bytes of the current line and how many bytes of it were dropped."""
        head = bytes(self._buffer[:limit])
        del self._buffer[:limit]
        dropped = 0
        while True:
            newline = self._buffer.find(b"\n")
            if newline >= 0:
                dropped += newline
                del self._buffer[:newline + 1]
                break
            dropped += len(self._buffer)
            self._buffer.clear()
            if self._ended:
                break
            await self._fill()
        return head + f" … [{dropped} bytes cut]\n".encode()

    async def _fill(self) -> None:
        try:
            chunk = await self._stream.read(_CHUNK)
        except (asyncssh.Error, OSError):  # the connection is gone: the stream has ended
            chunk = b""
        self._ended = not chunk
        self._buffer += chunk


HEARTBEAT = 2.0  # seconds between the orchestrator's heartbeats to a held lock (see `hold-lock`)
RELEASE_TIMEOUT = 30.0  # a released lock's process ends at once; past this, the connection's close ends it


class HeldLock:
    """A server's deploy lock held for the orchestrator. A heartbeat keeps it: when the
    orchestrator dies or the network between goes, the server lets it go within seconds."""

    def __init__(self, server: Server, proc: Process) -> None:
        self.server = server
        self._proc = proc
        self._beat = asyncio.ensure_future(self._heartbeat())
        self._released: asyncio.Future | None = None

    async def _heartbeat(self) -> None:
        while self._proc.write("\n"):
            await asyncio.sleep(HEARTBEAT)

    async def release(self, timeout: float = RELEASE_TIMEOUT) -> tuple[int, str]:
        """Stop the heartbeat and close its stdin; the server lets the lock go. Once only."""
        if self._released is None:
            self._released = asyncio.ensure_future(self._release(timeout))
        return await asyncio.shield(self._released)

    async def _release(self, timeout: float) -> tuple[int, str]:
        self._beat.cancel()
        self._proc.close_stdin()
        try:
            err = await asyncio.wait_for(self._proc.read("stderr"), timeout)
            return await asyncio.wait_for(self._proc.wait(), timeout), err
        except asyncio.TimeoutError:
            return 255, f"{self.server.name}: its lock did not answer within {timeout:g}s of its release"


async def settled(task: asyncio.Future, timeout: float = 5.0) -> None:
    """Wait a little for a helper task that ends with the process (a stderr pump): a grandchild
    that kept the stream open must not hold the orchestrator."""
    try:
        await asyncio.wait_for(task, timeout)
    except asyncio.TimeoutError:
        pass


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value or ""


def token_line(token: str) -> str:
    """How a command under the orchestrator's lock gets the token: the first line on its stdin."""
    return token + "\n"


async def _run_local(argv: list[str], timeout: float, stdin: str | None = None) -> Result:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    except OSError as exc:
        return Result(argv, 127, "", f"{argv[0]}: {exc.strerror or exc}")
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin else None), timeout)
    except (asyncio.TimeoutError, asyncio.CancelledError):
        proc.kill()
        await proc.wait()
        raise
    return Result(argv, proc.returncode if proc.returncode is not None else 255,
                  out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))


def _why(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return one_line(str(reason))


def remote_failure(server: Server, result: Result) -> DeployError:
    """A failed `deployer` on a server, as the same kind of error (its exit code) naming the server."""
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    if result.exit_status == 255 and not any(line.startswith("deployer: error:") for line in lines):
        return OperationFailed(f"{server.name}: the connection was lost while it ran `deployer {command_of(result.argv)}`",
                               details="\n".join(f"[{server.name}] {line}" for line in lines[-8:]))
    last = lines.pop() if lines else ""
    message = last.removeprefix("deployer: error: ") if last else f"exited with status {result.exit_status}"
    message, _, hint = message.partition(" — ")  # how _report joins a message and its hint
    if result.exit_status == 3:  # the server's hint names --wait, which an orchestrator refuses
        hint = "run the command again once that deploy has finished (`deployer status` names the holder)"
    error = {2: BadInput, 3: LockHeld}.get(result.exit_status, OperationFailed)
    return error(f"{server.name}: {message}", hint=hint, details="\n".join(f"[{server.name}] {line}" for line in lines[-8:]))


async def connect(fleet: FleetConfig, server: Server) -> Connection:
    """Open the server's connection: host key verified against ssh.known_hosts (never learned),
    then the remote deployer's version checked against ours. Unknown or changed host key, a
    refused login or another version is exit 2; an unreachable server is exit 1."""
    if server.local:
        connection = Connection(server, None, fleet.timeouts.command)
    else:
        connection = Connection(server, await _open_ssh(fleet, server), fleet.timeouts.command)
    try:
        await check_version(connection)
    except BaseException:
        await connection.close()
        raise
    return connection


# As OpenSSH does: the key types known_hosts lists for the host first (asyncssh's own order),
# then every other default type. Offering only the listed types would make a server whose key is
# of another type hang up during key exchange (a "cannot reach"); offered all, it shows its key,
# which known_hosts then refuses like any changed key.
_HOST_KEY_ALGS = "+" + ",".join(alg.decode("ascii") for alg in
                                get_default_certificate_algs() + get_default_public_key_algs())


async def _open_ssh(fleet: FleetConfig, server: Server) -> asyncssh.SSHClientConnection:
    ssh = fleet.ssh
    where = f"{server.host} port {server.port}"
    try:
        return await asyncssh.connect(
            server.host, server.port,
            username=server.user or (),
            known_hosts=str(ssh.known_hosts),  # never None: None would accept any key
            x509_trusted_certs=None, x509_trusted_cert_paths=[],  # host trust is known_hosts only
            server_host_key_algs=_HOST_KEY_ALGS,
            client_keys=[str(ssh.identity)] if ssh.identity else (),
            agent_path=None if ssh.identity else (),
            config=[],  # ~/.ssh/config could change the host, port or keys behind this file's back
            connect_timeout=ssh.connect_timeout,
            keepalive_interval=5, keepalive_count_max=3,  # a dead server is noticed within ~15 s
        )
    except asyncssh.HostKeyNotVerifiable as exc:
        raise BadInput(f"{server.name}: host key of {where} not verified against {ssh.known_hosts}: {_why(exc)}",
                       hint="an unknown or changed key is refused; add the right key after checking it out of band") from None
    except asyncssh.PermissionDenied as exc:
        raise BadInput(f"{server.name}: SSH login to {server.destination} refused: {_why(exc)}",
                       hint="check ssh.identity and the server's authorized_keys") from None
    except (asyncssh.Error, OSError, asyncio.TimeoutError) as exc:
        raise OperationFailed(f"{server.name}: cannot reach {where}: {_why(exc)}",
                              hint="nothing was changed on any server") from None


async def check_version(connection: Connection) -> str:
    server = connection.server
    result = await connection.run(version_argv(server), timeout=60)
    found = _VERSION.search(result.stdout)
    if not result.ok or not found:
        raise BadInput(f"{server.name}: {shown(server.deployer)} does not answer --version as a deployer "
                       f"(status {result.exit_status})",
                       hint="install the deployer on that server, or set its `deployer:` path",
                       details=tail(result.stdout + result.stderr))
    if found.group(1) != __version__:
        raise BadInput(f"{server.name}: runs deployer {found.group(1)}, this orchestrator is {__version__}",
                       hint="install the same deployer version on every server")
    return found.group(1)


T = TypeVar("T")


@dataclass
class Outcome:
    """What one server's task gave: a value, or the error that stopped it."""

    server: Server
    value: Any = None
    error: DeployError | None = None


async def on_each(fleet: FleetConfig, task: Callable[[Connection], Awaitable[T]]) -> list[Outcome]:
    """Connect to every server (at most `parallel` at once) and run `task` on each; one
    server's failure never stops another's. Outcomes come back in the config's order."""
    gate = asyncio.Semaphore(fleet.parallel)

    async def one(server: Server) -> Outcome:
        async with gate:
            try:
                connection = await connect(fleet, server)
            except DeployError as exc:
                return Outcome(server, error=exc)
            try:
                return Outcome(server, value=await task(connection))
            except DeployError as exc:
                return Outcome(server, error=exc)
            finally:
                await connection.close()

    return list(await asyncio.gather(*(one(server) for server in fleet.servers)))


async def connect_all(fleet: FleetConfig) -> list[Connection]:
    """A connection to every server, or none: one unreachable or refused server closes the
    others and stops the command before anything changed."""
    gate = asyncio.Semaphore(fleet.parallel)

    async def one(server: Server) -> Outcome:
        async with gate:
            try:
                return Outcome(server, value=await connect(fleet, server))
            except DeployError as exc:
                return Outcome(server, error=exc)

    outcomes = await asyncio.gather(*(one(server) for server in fleet.servers))
    error = worst(outcomes)
    if error is not None:
        await close_all([outcome.value for outcome in outcomes if outcome.value is not None])
        raise error
    return [outcome.value for outcome in outcomes]


async def close_all(connections: list[Connection]) -> None:
    for connection in connections:
        await connection.close()


async def lock_all(connections: list[Connection], token: str, timeout: float) -> list[HeldLock]:
    """Every server's deploy lock, taken one by one in the config's order (two orchestrators
    can never each hold half). A lock held anywhere releases the ones taken: exit 3 naming the
    server and its holder."""
    held: list[HeldLock] = []
    try:
        for connection in connections:
            held.append(await connection.hold_lock(token, timeout))
    except BaseException:
        await release_all(held)
        raise
    return held


@asynccontextmanager
async def locked(fleet: FleetConfig) -> AsyncIterator[tuple[list[Connection], str]]:
    """Every server connected (or none) and locked in order (or none), for one orchestrated
    command; yields the connections and the token the servers' commands run under."""
    token = secrets.token_hex(16)
    connections = await connect_all(fleet)
    try:
        held = await lock_all(connections, token, fleet.timeouts.lock)
        try:
            yield connections, token
        finally:
            await release_all(held)
    finally:
        await close_all(connections)


async def release_all(held: list[HeldLock]) -> None:
    for lock in reversed(held):
        await lock.release()


def worst(outcomes: list[Outcome]) -> DeployError | None:
    """The error to exit with: bad configuration (2) before a failure (1), first server first."""
    errors = [outcome.error for outcome in outcomes if outcome.error is not None]
    if not errors:
        return None
    return max(errors, key=lambda error: (error.exit_code == 2, error.exit_code))
