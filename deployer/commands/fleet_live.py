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
import json
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from secrets import token_hex
from typing import Callable

from deployer.argv import (
    activate_argv, list_argv, orchestrated, rollback_argv, rollback_argv_tail,
)
from deployer.commands.fleet import build_everywhere, plan_of, same_release, say_as, status_of
from deployer.errors import BadInput, DeployError, OperationFailed
from deployer.fleet import FleetConfig, Server
from deployer.gate import EVENT
from deployer.remote import Connection, Process, Result, locked, remote_failure

ArgvOf = Callable[[Server], list[str]]
PAST_BARRIERS = ("already-live", "ended", "done")


@dataclass
class Run:
    """One server's orchestrated activate/rollback, followed event by event."""

    connection: Connection
    proc: Process
    argv: list[str]
    owns_schema: bool
    state: str = "started"  # migrated, prepared, live, then done; or already-live, or ended (failed)
    event: dict = field(default_factory=dict)  # the last event it told
    error: DeployError | None = None
    lines: deque = field(default_factory=lambda: deque(maxlen=40))
    pump: asyncio.Future | None = None

    @property
    def name(self) -> str:
        return self.connection.server.name

    def tell(self, word: str, reason: str = "") -> None:
        self.proc.write(json.dumps({"do": word, "reason": reason}) + "\n")


def new_deploy_id() -> str:
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{token_hex(3)}"


def deploy(fleet: FleetConfig, ref: str) -> str:
    async def run() -> str:
        async with locked(fleet) as (connections, token):
            sha = await build_everywhere(fleet, connections, ref, token)
            say_as("all", "")
            await switch_everywhere(fleet, connections, token, lambda server: activate_argv(server, sha))
            return sha
    return _finish(fleet, asyncio.run(run()))


def activate(fleet: FleetConfig, sha_or_prefix: str) -> str:
    async def run() -> str:
        async with locked(fleet) as (connections, token):
            sha = await _resolve(fleet, connections, sha_or_prefix)
            await same_release(connections, sha)
            await switch_everywhere(fleet, connections, token, lambda server: activate_argv(server, sha))
            return sha
    return _finish(fleet, asyncio.run(run()))


def rollback(fleet: FleetConfig, to: str | None, migrate: bool, force: bool) -> str:
    async def run() -> str:
        async with locked(fleet) as (connections, token):
            target = await _rollback_target(connections, to, migrate, force)
            await same_release(connections, target)
            await switch_everywhere(fleet, connections, token,
                                    lambda server: rollback_argv(server, target, migrate, force))
            return target
    return _finish(fleet, asyncio.run(run()))


def _finish(fleet: FleetConfig, sha: str) -> str:
    say_as("all", f"{sha[:12]} is live on {len(fleet.servers)} server(s)")
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
    command = rollback_argv_tail(to, migrate, force)
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


async def switch_everywhere(fleet: FleetConfig, connections: list[Connection], token: str, argv_of: ArgvOf) -> None:
    """Phases 4-7: migrate once, prepare all, go live (all at once or in batches), commit all;
    any failure calls off every other server, says where each one is now, and raises."""
    try:
        await _switch(fleet, connections, token, argv_of)
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


async def _switch(fleet: FleetConfig, connections: list[Connection], token: str, argv_of: ArgvOf) -> None:
    deploy_id = new_deploy_id()
    say_as("all", f"deploy id {deploy_id}")
    first = next(c for c in connections if c.server.name == fleet.migrations_server.name)
    others = [c for c in connections if c is not first]

    def start(connection: Connection, owns_schema: bool):
        argv = orchestrated(argv_of(connection.server), token, deploy_id, owns_schema)
        return _start(connection, argv, owns_schema)

    lead = await start(first, True)
    if await _advance(lead, "migrated") == "ended":
        raise _failure_of(lead, "nothing live was changed on any server")
    runs = [lead] + list(await asyncio.gather(*(start(c, False) for c in others)))
    runs.sort(key=lambda run: [c.server.name for c in connections].index(run.name))
    await asyncio.gather(*(_advance(run, "prepared") for run in runs))
    await _stop_if_failed(runs)
    ready = [run for run in runs if run.state == "prepared"]
    standby = all(run.event.get("standby") for run in ready)  # then they all flip at once
    batches = [ready] if standby else [ready[i:i + fleet.parallel] for i in range(0, len(ready), fleet.parallel)]
    for batch in batches:
        for run in batch:
            run.tell("go")
        await asyncio.gather(*(_advance(run, "live") for run in batch))
        await _stop_if_failed(runs)
    for run in ready:
        run.tell("commit")
    await asyncio.gather(*(_advance(run, "done") for run in ready))
    failed = [run for run in ready if run.state != "done"]
    if failed:  # after every server went live: only recording can fail here
        raise _failure_of(failed[0], "every server went live; check `deployer status`")


async def _start(connection: Connection, argv: list[str], owns_schema: bool) -> Run:
    run = Run(connection, await connection.start(argv), argv, owns_schema)
    run.pump = asyncio.ensure_future(run.proc.pump_stderr(lambda line: (run.lines.append(line), say_as(run.name, line))))
    return run


async def _advance(run: Run, wanted: str) -> str:
    """Follow the server's events until `wanted`, or until it is past every barrier."""
    if run.state in PAST_BARRIERS:
        return run.state
    while True:
        line = await run.proc.readline("stdout")
        if not line:
            return await _ended(run)
        if line.startswith(EVENT):
            try:
                run.event = json.loads(line[len(EVENT):])
                run.state = run.event["event"]
            except (ValueError, KeyError, TypeError):
                continue
            if run.state == "already-live":
                await _ended(run)
                run.state = "already-live"
                return run.state
            if run.state == wanted:
                return run.state


async def _ended(run: Run) -> str:
    status = await run.proc.wait()
    if run.pump is not None:
        await run.pump
    if status == 0:
        run.state = "done"
        return run.state
    run.state = "ended"
    run.error = remote_failure(run.connection.server, Result(run.argv, status, "", "\n".join(run.lines)))
    return run.state


async def _stop_if_failed(runs: list[Run]) -> None:
    failed = [run for run in runs if run.state == "ended"]
    if not failed:
        return
    culprit = failed[0]
    reason = f"{culprit.name} failed: {culprit.error.message if culprit.error else 'unknown'}"
    # The servers that run no new code first, the migrations server (which puts the schema back) last.
    waiting = [run for run in runs if run.state not in PAST_BARRIERS]
    for group in ([run for run in waiting if not run.owns_schema], [run for run in waiting if run.owns_schema]):
        for run in group:
            run.tell("revert" if run.state == "live" else "abort", reason)
        await asyncio.gather(*(_advance(run, "done") for run in group))
    raise _failure_of(culprit, _outcomes(runs, culprit))


def _outcomes(runs: list[Run], culprit: Run) -> str:
    """Where every server ended, from its own last word."""
    parts = []
    for run in runs:
        if run.state == "already-live":
            parts.append(f"{run.name}: was already on it, left as is")
        elif run.error is not None and run.error.hint:
            parts.append(f"{run.name}: {run.error.hint}")
        elif run is not culprit and run.error is not None:
            parts.append(f"{run.name}: {run.error.message}")
    return "; ".join(parts)


def _failure_of(run: Run, hint: str) -> DeployError:
    error = run.error or OperationFailed(f"{run.name}: stopped without saying why")
    error.hint = hint
    return error
