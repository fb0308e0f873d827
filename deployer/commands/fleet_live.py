"""`deploy`, `activate` and `rollback` across servers (docs/design.md §13): every server serves
the new release, or none does.

Each server runs its own `activate`/`rollback --orchestrated ID` (deployer/gate.py), which stops
twice and waits for the orchestrator's word. The orchestrator:

1. starts it on the migrations server and waits until that one has migrated (with a backup);
2. starts it on the others, which leave the schema to the migrations server;
3. waits until every server is prepared (standby: its idle colour started and smoke-tested);
4. says "go" (standby: to all at once, so they flip within milliseconds; restart: in batches of
   `parallel`) and waits until each is live, smoke-tested through its own front door;
5. says "commit" to all; or, at the first failure, "abort"/"revert" to every other server, the
   migrations server last so that it puts the schema back once no server runs the new code.

A server that loses the orchestrator (killed, or the network gone) puts itself back: its
barrier reads end-of-file, or its held lock misses the heartbeat and stops it.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from secrets import token_hex
from typing import Any, Awaitable, Callable, Coroutine, TypeVar

from deployer import history, notify
from deployer.argv import (
    activate_argv, list_argv, orchestrated, rollback_argv, rollback_command,
)
from deployer.commands.fleet import build_everywhere, plan_of, same_release, say_as, status_of
from deployer.errors import BadInput, DeployError, OperationFailed
from deployer.fleet import FleetConfig, Server, Timeouts
from deployer.gate import EVENT
from deployer.signals import STOPPING
from deployer.remote import Connection, Process, Result, locked, remote_failure, settled

ArgvOf = Callable[[Server], list[str]]
T = TypeVar("T")
DONE, ENDED = "done", "ended"
HOLDING = "holding"  # the migrations server failed and waits to put its schema back (deployer/gate.py)
PAST_BARRIERS = ("already-live", ENDED, DONE)


@dataclass
class Run:
    """One server's orchestrated activate/rollback, followed event by event."""

    connection: Connection
    proc: Process
    argv: list[str]
    owns_schema: bool
    state: str = "started"  # migrated, prepared, live, then done; or already-live, or ended (failed)
    event: dict = field(default_factory=dict)  # the last barrier event it told
    step: str = ""  # the step it last started
    error: DeployError | None = None
    silent: bool = False  # no answer within its phase's deadline
    others_back: bool = False  # every other server is back: its schema may move (§13)
    told_go: bool = False  # told to go live: it may have switched
    committed: bool = False  # told to keep the release: nothing switches it back now
    previous: str | None = None  # the release it served before (its `prepared` event says)
    repaired: bool | None = None  # its deployer died: whether the orchestrator put it back (None: not needed)
    repair_failure: str = ""  # why putting it back failed
    warnings: list[str] = field(default_factory=list)
    lines: deque = field(default_factory=lambda: deque(maxlen=40))
    pump: asyncio.Future | None = None

    @property
    def name(self) -> str:
        return self.connection.server.name

    def tell(self, word: str, reason: str = "", result: str = "") -> None:
        """A word at its barrier; a call-off says what its history records (deployer/gate.py)."""
        self.told_go = self.told_go or word == "go"
        self.committed = self.committed or word == "commit"
        self.proc.write(json.dumps({"do": word, "reason": reason, **({"result": result} if result else {})}) + "\n")


PutBack = Callable[[Run], Awaitable[None]]


def new_deploy_id() -> str:
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{token_hex(3)}"


def deploy(fleet: FleetConfig, ref: str) -> str:
    async def choose(connections: list[Connection], token: str) -> tuple[str, ArgvOf]:
        sha = await build_everywhere(fleet, connections, ref, token)
        say_as("all", "")
        return sha, lambda server: activate_argv(server, sha)
    return _switch_to(fleet, "deploy", choose)


def activate(fleet: FleetConfig, sha_or_prefix: str) -> str:
    async def choose(connections: list[Connection], token: str) -> tuple[str, ArgvOf]:
        sha = await _resolve(fleet, connections, sha_or_prefix)
        await same_release(connections, sha)
        return sha, lambda server: activate_argv(server, sha)
    return _switch_to(fleet, "activate", choose)


def rollback(fleet: FleetConfig, to: str | None, migrate: bool, force: bool) -> str:
    async def choose(connections: list[Connection], token: str) -> tuple[str, ArgvOf]:
        target = await _rollback_target(connections, to, migrate, force)
        await same_release(connections, target)
        return target, lambda server: rollback_argv(server, target, migrate, force)
    return _switch_to(fleet, "rollback", choose)


Choose = Callable[[list[Connection], str], Awaitable[tuple[str, ArgvOf]]]


def _switch_to(fleet: FleetConfig, command: str, choose: Choose) -> str:
    """Under every server's lock: choose the release (building it first for a deploy), switch
    every server to it or none, then say so and notify."""
    report = Report(command)

    async def run() -> tuple[str, list[str]]:
        async with locked(fleet) as (connections, token):
            sha, argv_of = await choose(connections, token)
            report.sha = sha
            return sha, await switch_everywhere(fleet, connections, token, argv_of, report)
    return _notifying(fleet, report, lambda: _finish(fleet, *run_interruptible(run())))


@dataclass
class Report:
    """What one deploy, activate or rollback across servers did: the orchestrator's notification."""

    command: str
    sha: str | None = None
    deploy_id: str | None = None
    runs: list[Run] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def payload(self, fleet: FleetConfig, exc: BaseException | None) -> dict:
        outcomes = {run.name: _outcome(run) for run in self.runs}
        payload = {
            "event": self.command, "sha": self.sha, "result": history.FAILED if exc else history.OK,
            "seconds": round(time.monotonic() - self.started, 2), "user": getpass.getuser(),
            "host": socket.gethostname(), "servers": [server.name for server in fleet.servers],
            "deploy_id": self.deploy_id,
            "results": {server.name: outcomes.get(server.name, "not started") for server in fleet.servers},
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        if exc is not None:
            payload["reason"] = getattr(exc, "message", None) or type(exc).__name__
        return payload


def _outcome(run: Run) -> str:
    if run.state == DONE:
        return "ok"
    if run.state == "already-live":
        return run.state
    return "put back by the orchestrator" if run.repaired else "failed"


def _notifying(fleet: FleetConfig, report: Report, work: Callable[[], str]) -> str:
    """Run `work`; with `notify:` in servers.yml, one notification for the whole fleet after it
    (each server still sends its own, with the same deploy_id). Bad input, a held lock and
    Ctrl-C before anything changed send none, as on one server."""
    try:
        sha = work()
    except BaseException as exc:
        if fleet.notify is not None and notify.is_failure(exc):
            notify.send(fleet.notify.webhook, fleet.notify.env_file, report.payload(fleet, exc))
        raise
    if fleet.notify is not None:
        notify.send(fleet.notify.webhook, fleet.notify.env_file, report.payload(fleet, None))
    return sha


def run_interruptible(work: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, where the first Ctrl-C, SIGTERM or SIGHUP cancels the work, which then puts
    every server back (its put-back is not cut short: later signals are ignored). Cancelled
    before anything changed: exit 130, as on one server."""
    async def main() -> T:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        stopping: list[int] = []

        def stop(signum: int) -> None:
            if not stopping:
                stopping.append(signum)
                task.cancel()
        for signum in STOPPING:
            loop.add_signal_handler(signum, stop, signum)
        try:
            return await work
        except asyncio.CancelledError:
            if stopping:
                raise KeyboardInterrupt from None
            raise
        finally:
            for signum in STOPPING:
                loop.remove_signal_handler(signum)
    return asyncio.run(main())


def _finish(fleet: FleetConfig, sha: str, warnings: list[str]) -> str:
    said = f"; {len(warnings)} warning(s): " + "; ".join(warnings) if warnings else ""
    say_as("all", f"{sha[:12]} is live on {len(fleet.servers)} server(s){said}")
    print(sha)
    return sha


async def _resolve(fleet: FleetConfig, connections: list[Connection], sha_or_prefix: str) -> str:
    """The release the prefix names, as the migrations server knows it (checked everywhere after)."""
    authority = next(c for c in connections if c.server.name == fleet.migrations_server.name)
    answer = await authority.deployer_json(list_argv(authority.server))
    found = sorted({row["sha"] for row in answer.get("releases", []) if row.get("sha", "").startswith(sha_or_prefix)})
    if len(found) != 1:
        what = "no release" if not found else f"{len(found)} releases"
        raise BadInput(f"{authority.server.name}: {what} under releases/ match {sha_or_prefix!r}",
                       hint="build it everywhere first with `deployer release <ref>`; give more of the sha")
    return found[0]


async def _rollback_target(connections: list[Connection], to: str | None, migrate: bool, force: bool) -> str:
    """A target that was live on every server. Servers on one release: each one's own choice
    (from its history), which must agree. Servers left mixed (an orchestrator killed between
    commits): the release some are still on and the others would roll back to."""
    command = rollback_command(to, migrate, force)
    plans = dict(zip((c.server.name for c in connections),
                     await asyncio.gather(*(plan_of(c, command) for c in connections))))
    targets = {name: None if plan.get("refused") else plan.get("sha") for name, plan in plans.items()}
    if None not in targets.values() and len(set(targets.values())) == 1:
        return next(iter(targets.values()))
    currents = dict(zip(plans, await asyncio.gather(*(_current_of(c) for c in connections))))
    behind = [sha for sha in set(currents.values())
              if sha and all(currents[name] == sha or targets[name] == sha for name in targets)]
    if len(set(currents.values())) > 1 and len(behind) == 1:
        return behind[0]
    for name, plan in plans.items():
        if plan.get("refused"):
            raise OperationFailed(f"{name}: {plan['refused']}", hint="nothing was changed on any server")
    which = ", ".join(f"{name} on {(currents[name] or '(none)')[:12]} → {(sha or '(none)')[:12]}"
                      for name, sha in targets.items())
    raise OperationFailed(f"servers disagree on what to roll back to: {which}",
                          hint="nothing was changed; name the release with `deployer rollback --to SHA`")


async def _current_of(connection: Connection) -> str | None:
    return (await status_of(connection)).get("current")


async def switch_everywhere(fleet: FleetConfig, connections: list[Connection], token: str,
                            argv_of: ArgvOf, report: Report) -> list[str]:
    """Phases 4-7: migrate once, prepare all, go live (all at once or in batches), commit all;
    any failure calls off every other server, says where each one is now, and raises. Returns
    the warnings servers gave after commit (the release stays live)."""
    try:
        return await _switch(fleet, connections, token, argv_of, report)
    except DeployError:
        await _where_now(connections)
        raise


async def _where_now(connections: list[Connection]) -> None:
    currents = set()
    for connection, answer in zip(connections, await asyncio.gather(
            *(status_of(c) for c in connections), return_exceptions=True)):
        if isinstance(answer, BaseException):
            currents.add(None)
            say_as(connection.server.name, f"now: UNKNOWN ({getattr(answer, 'message', answer)})")
        else:
            currents.add(answer.get("current"))
            say_as(connection.server.name, f"now on {(answer.get('current') or '(none)')[:12]}")
    say_as("all", "servers agree" if len(currents) == 1 and None not in currents else
         "SERVERS DISAGREE: run `deployer status`; the next deploy, activate or rollback brings them to one release")


async def _switch(fleet: FleetConfig, connections: list[Connection], token: str, argv_of: ArgvOf,
                  report: Report) -> list[str]:
    deploy_id = report.deploy_id = new_deploy_id()
    say_as("all", f"deploy id {deploy_id}")
    timeouts = fleet.timeouts
    first = next(c for c in connections if c.server.name == fleet.migrations_server.name)
    others = [c for c in connections if c is not first]
    batch_size = fleet.parallel
    barrier = timeouts.barrier(batches=-(-len(connections) // batch_size))

    def start(connection: Connection, owns_schema: bool, command: ArgvOf = argv_of):
        argv = orchestrated(command(connection.server), deploy_id, owns_schema,
                            barrier_timeout=barrier, put_back_timeout=timeouts.put_back)
        return _start(connection, argv, owns_schema, token)

    async def put_back(stray: Run) -> None:
        """A server whose deployer died after the word to go live (killed there) cannot put
        itself back: an orchestrated rollback to its previous release does it, under the same
        lock (the migrations server's with --migrate: it unapplies what it applied, last)."""
        rollback = lambda server: rollback_argv(server, stray.previous, migrate=stray.owns_schema, force=False)
        run = await start(stray.connection, stray.owns_schema, rollback)
        for wanted, word, timeout in (("prepared", "go", timeouts.prepare), ("live", "commit", timeouts.live)):
            if await _advance(run, wanted, timeout) != wanted:
                break
            run.tell(word)
        await _advance(run, DONE, timeouts.commit)
        if run.state == HOLDING:
            await _settle(run, timeouts.put_back)
        stray.repaired = run.state == DONE
        stray.repair_failure = "" if stray.repaired else _why(run)

    runs = report.runs
    try:
        lead = await start(first, True)
        runs.append(lead)
        if await _advance(lead, "migrated", timeouts.migrate) == ENDED:
            await _settle(lead, timeouts.put_back)
            raise _failure_of(lead, "nothing live was changed on any server")
        runs += await asyncio.gather(*(start(c, False) for c in others))
        runs.sort(key=lambda run: [c.server.name for c in connections].index(run.name))
        return await _go_live_together(runs, timeouts, batch_size, put_back)
    except asyncio.CancelledError:  # Ctrl-C, SIGTERM or SIGHUP to the orchestrator (run_interruptible)
        await _call_off(runs, "the orchestrator was interrupted", timeouts, put_back, result=history.FAILED)
        if runs and all(run.committed for run in runs if run.state != "already-live"):
            say_as("all", "interrupted after every server had the word to keep the release")
            return [f"{run.name}: {warning}" for run in runs for warning in run.warnings]
        raise OperationFailed("interrupted", hint=_outcomes(runs, None) or "nothing live was changed") from None


async def _go_live_together(runs: list[Run], timeouts: Timeouts, batch_size: int, put_back: PutBack) -> list[str]:
    await asyncio.gather(*(_advance(run, "prepared", timeouts.prepare) for run in runs))
    await _stop_if_failed(runs, timeouts, put_back)
    ready = [run for run in runs if run.state == "prepared"]
    standby = all(run.event.get("standby") for run in ready)  # then they all flip at once
    batches = [ready] if standby else [ready[i:i + batch_size] for i in range(0, len(ready), batch_size)]
    for batch in batches:
        for run in batch:
            run.tell("go")
        await asyncio.gather(*(_advance(run, "live", timeouts.live) for run in batch))
        await _stop_if_failed(runs, timeouts, put_back)
    for run in ready:
        run.tell("commit")
    await asyncio.gather(*(_advance(run, DONE, timeouts.commit) for run in ready))
    failed = [run for run in ready if run.state != DONE]
    if failed:  # after every server went live: only recording can fail here, and nothing switches back
        raise _failure_of(failed[0], "every server went live and keeps the release; check `deployer status`")
    return [f"{run.name}: {warning}" for run in ready for warning in run.warnings]


async def _start(connection: Connection, argv: list[str], owns_schema: bool, token: str) -> Run:
    """Start a server's orchestrated command: the lock's token first on its stdin, then the
    barrier's words (deployer/gate.py)."""
    run = Run(connection, await connection.start(argv, token), argv, owns_schema)
    run.pump = asyncio.ensure_future(run.proc.pump_stderr(lambda line: (run.lines.append(line), say_as(run.name, line))))
    return run


async def _advance(run: Run, wanted: str, timeout: float) -> str:
    """Follow the server's events until `wanted`, or until it is past every barrier; a server
    silent past `timeout` has failed (its lock is released, which stops it there)."""
    if run.state in PAST_BARRIERS or run.state == HOLDING:
        return run.state
    try:
        return await asyncio.wait_for(_follow(run, wanted), timeout)
    except asyncio.TimeoutError:
        await _silenced(run, timeout)
        return run.state


async def _follow(run: Run, wanted: str) -> str:
    while True:
        line = await run.proc.readline("stdout")
        if not line:
            return await _ended(run)
        event = _event_of(line)
        if event is None:
            continue
        name = event["event"]
        if name == "step":  # where it is, for a deadline's message
            run.step = str(event.get("name", ""))
            continue
        if name == "warning":  # after commit: reported, the release stays live
            run.warnings.append(str(event.get("message", "")))
            continue
        run.event, run.state = event, name
        if name == "prepared":
            run.previous = event.get("previous") or None
        if name == "schema-hold":
            if run.others_back:  # the others are back already: its schema may move
                run.tell("restore-schema")
                continue
            run.state = HOLDING
            return run.state
        if name == "already-live":
            await _ended(run)
            run.state = name
            return run.state
        if name == wanted:
            return run.state


def _event_of(line: str) -> dict | None:
    if not line.startswith(EVENT):
        return None
    try:
        event = json.loads(line[len(EVENT):])
    except ValueError:
        return None
    return event if isinstance(event, dict) and isinstance(event.get("event"), str) else None


async def _ended(run: Run) -> str:
    status = await run.proc.wait()
    if run.pump is not None:
        await settled(run.pump)
    said = remote_failure(run.connection.server, Result(run.argv, status, "", "\n".join(run.lines)))
    if run.error is not None:  # it had gone silent: what it said once stopped is where it is now
        run.error.hint = said.hint if status != 0 and said.hint else run.error.hint
    elif status == 0:
        run.state = DONE
        return run.state
    else:
        run.error = said
    run.state = ENDED
    return run.state


async def _silenced(run: Run, timeout: float) -> None:
    where = (f"in step '{run.step}'" if run.step else
             f"after '{run.event['event']}'" if run.event else "before its first step")
    run.error = OperationFailed(f"{run.name}: no answer within {timeout:g}s {where}",
                                hint="its lock was released, which stops it there; check `deployer status`")
    run.state = ENDED
    run.silent = True
    await run.connection.let_go()


async def _settle(run: Run, timeout: float) -> None:
    """Give a failed server time to finish putting itself back (its schema may move at once)."""
    run.others_back = True
    if not run.silent and run.state != HOLDING:
        return
    if run.state == HOLDING:
        run.tell("restore-schema")
    run.state = "settling"
    try:
        await asyncio.wait_for(_follow(run, DONE), timeout)
    except asyncio.TimeoutError:
        run.error.hint = f"it did not finish putting itself back within {timeout:g}s; check `deployer status`"
    run.state = ENDED


async def _stop_if_failed(runs: list[Run], timeouts: Timeouts, put_back: PutBack) -> None:
    failed = [run for run in runs if run.state in (ENDED, HOLDING)]
    if not failed:
        return
    culprit = failed[0]
    await _call_off(runs, f"{culprit.name} failed: {_why(culprit)}", timeouts, put_back)
    raise _failure_of(culprit, _outcomes(runs, culprit))


async def _call_off(runs: list[Run], reason: str, timeouts: Timeouts, put_back: PutBack,
                    result: str = history.FAILED_SMOKE) -> None:
    """Every server still at a barrier puts back: those that run no new code first, the
    migrations server (which puts the schema back) last. A server whose deployer died after the
    word to go live is put back by the orchestrator, in the same order. Then a failed migrations
    server that holds its schema lets it move."""
    waiting = [run for run in runs if run.state not in PAST_BARRIERS and run.state != HOLDING]
    await asyncio.gather(*(_advance(run, DONE, timeouts.commit) for run in waiting if run.committed))
    waiting = [run for run in waiting if not run.committed]
    for owns_schema in (False, True):
        group = [run for run in waiting if run.owns_schema == owns_schema]
        for run in group:
            run.tell("revert" if run.state == "live" else "abort", reason, result)
        await asyncio.gather(*(_advance(run, DONE, timeouts.put_back) for run in group))
        for stray in await _strays([run for run in runs if run.owns_schema == owns_schema]):
            await put_back(stray)
    await asyncio.gather(*(_settle(run, timeouts.put_back) for run in runs if run.state in (ENDED, HOLDING)))


async def _strays(runs: list[Run]) -> list[Run]:
    """Servers told to go live, not to keep it, that are not back on their previous release
    once they ended: their deployer died (kill -9, out of memory) before it could put back."""
    candidates = [run for run in runs if run.told_go and not run.committed and run.previous
                  and run.state in (ENDED, DONE)]
    answers = await asyncio.gather(*(status_of(run.connection) for run in candidates), return_exceptions=True)
    return [run for run, answer in zip(candidates, answers)
            if isinstance(answer, dict) and answer.get("current") != run.previous]


def _why(run: Run) -> str:
    if run.error is not None:
        return run.error.message
    return str(run.event.get("reason") or "unknown")


def _repair_note(run: Run) -> str:
    back = run.previous[:12]
    if run.repaired:
        return f"its deployer died; the orchestrator put it back on {back}"
    return f"its deployer died and putting it back on {back} failed: {run.repair_failure}; " \
           f"run `deployer rollback --to {back}` there"


def _outcomes(runs: list[Run], culprit: Run | None) -> str:
    """Where every server ended, from its own last word."""
    parts = []
    for run in runs:
        if run.state == "already-live":
            parts.append(f"{run.name}: was already on it, left as is")
        elif run.repaired is not None:
            parts.append(f"{run.name}: {_repair_note(run)}")
        elif run.error is not None and run.error.hint:
            parts.append(f"{run.name}: {run.error.hint}")
        elif run is not culprit and run.error is not None:
            parts.append(f"{run.name}: {run.error.message}")
    return "; ".join(parts)


def _failure_of(run: Run, hint: str) -> DeployError:
    error = run.error or OperationFailed(f"{run.name}: stopped without saying why")
    error.hint = hint
    return error
