"""`status` and `check` across the servers of an orchestrator config (docs/design.md §13).

Each server is asked with its own `deployer` (same version, checked first) and answers in JSON;
this module only gathers the answers, one row per server, and says whether the servers agree.
"""

from __future__ import annotations

import asyncio
import json
import sys

from deployer.argv import check_argv, list_argv, plan_argv, prune_argv, release_argv, shown_command, status_argv
from deployer.errors import DeployError, OperationFailed
from deployer.fleet import FleetConfig
from deployer.remote import Connection, Outcome, locked, on_each, remote_failure, worst
from deployer.steps import dotted


async def status_of(connection: Connection) -> dict:
    """The server's own `status --json`."""
    return await connection.deployer_json(status_argv(connection.server))


async def plan_of(connection: Connection, command: list[str]) -> dict:
    """The server's own `<command> --plan --json` (a refused plan still answers JSON, exit 1)."""
    result = await connection.run(plan_argv(connection.server, command))
    try:
        return json.loads(result.stdout)
    except ValueError:
        raise remote_failure(connection.server, result) from None


def collect_status(fleet: FleetConfig) -> dict:
    outcomes = asyncio.run(on_each(fleet, status_of))
    rows = [_row(outcome) for outcome in outcomes]
    currents = {row["current"] for row in rows}
    reachable = all(row["error"] is None for row in rows)
    return {
        "servers": rows,
        "agree": reachable and len(currents) == 1,
        "current": next(iter(currents)) if reachable and len(currents) == 1 else None,
        "_outcomes": outcomes,
    }


def _row(outcome: Outcome) -> dict:
    server = outcome.server
    answer = outcome.value or {}
    return {
        "name": server.name,
        "destination": server.destination,
        "roles": list(server.roles),
        "current": answer.get("current"),
        "error": outcome.error.message if outcome.error else None,
        "status": answer or None,  # the server's own `status --json`
    }


def status(fleet: FleetConfig, as_json: bool) -> None:
    data = collect_status(fleet)
    outcomes = data.pop("_outcomes")
    if as_json:
        json.dump(data, sys.stdout, indent=2)
        print()
    else:
        _print_status(data)
    error = worst(outcomes)
    if error is not None:
        raise error


def _print_status(data: dict) -> None:
    width = max(len(row["name"]) for row in data["servers"])
    print(f"{'server':{width}}  {'current':12}  {'previous':12}  {'lock':8}  health")
    for row in data["servers"]:
        if row["error"]:
            print(f"{row['name']:{width}}  UNREACHABLE: {row['error']}")
            continue
        answer = row["status"]
        site = answer.get("health") or {}
        health = "ok" if site.get("ok") and site.get("serves_current") else ("FAILING" if not site.get("ok") else "SERVES ANOTHER RELEASE")
        holder = "HELD" if answer.get("lock") else "free"
        print(f"{row['name']:{width}}  {_short(answer.get('current')):12}  {_short(answer.get('previous')):12}  "
              f"{holder:8}  {health}")
    if data["agree"]:
        print(f"servers agree: all on {_short(data['current'])}")
    elif all(row["error"] is None for row in data["servers"]):
        on = ", ".join(f"{row['name']} on {_short(row['current'])}" for row in data["servers"])
        print(f"SERVERS DISAGREE: {on}; the next deploy, activate or rollback brings them to one release")
    else:
        print("SERVERS UNKNOWN: not every server answered")


def _short(sha: str | None) -> str:
    return sha[:12] if sha else "(none)"


def check(fleet: FleetConfig) -> int:
    """Every server: reachable, host key verified, same deployer version, and its own `check`."""

    async def run_check(connection: Connection) -> tuple[bool, list[str]]:
        result = await connection.run(check_argv(connection.server))
        return result.ok, result.stdout.rstrip().splitlines()

    outcomes = asyncio.run(on_each(fleet, run_check))
    failed = 0
    for outcome in outcomes:
        name = outcome.server.name
        if outcome.error is not None:
            failed += 1
            print(f"[{name}] {'FAIL':6}{outcome.error.message}" + (f" ({outcome.error.hint})" if outcome.error.hint else ""))
            continue
        ok, lines = outcome.value
        print(f"[{name}] {'ok':6}ssh {outcome.server.destination}: host key verified, same deployer version")
        for line in lines:
            print(f"[{name}] {line}")
        failed += not ok
    error = worst(outcomes)
    if error is not None and error.exit_code == 2:
        raise error
    if failed:
        print(f"deployer: check found problems on {failed} of {len(outcomes)} server(s)", file=sys.stderr)
        return 1
    return 0


def release(fleet: FleetConfig, ref: str) -> str:
    """`release <ref>` on every server (docs/design.md §13 phases 1–3): lock all in order,
    resolve once (the migrations server's answer is the sha), build on each in parallel, and
    check the tree digest and requirements key are identical everywhere. Nothing goes live."""
    sha = asyncio.run(_release(fleet, ref))
    print(sha)
    return sha


async def _release(fleet: FleetConfig, ref: str) -> str:
    async with locked(fleet) as (connections, token):
        return await build_everywhere(fleet, connections, ref, token)


async def build_everywhere(fleet: FleetConfig, connections: list[Connection], ref: str, token: str) -> str:
    """Phases 2-3: resolve once, build on each (at most `parallel` at once), same bytes everywhere."""
    sha = await _build_everywhere(fleet, connections, ref, token)
    await same_release(connections, sha)
    return sha


def say_as(name: str, text: str) -> None:
    """A server's step lines, each prefixed by its name (readable when servers run in parallel)."""
    for line in text.rstrip().splitlines() or [""]:
        print(f"[{name}] {line}" if line else "", file=sys.stderr, flush=True)


async def _release_on(connection: Connection, ref: str, token: str, gate: asyncio.Semaphore,
                      timeout: float) -> Outcome:
    async with gate:
        try:
            result = await connection.run_streaming(release_argv(connection.server, ref),
                                                    lambda line: say_as(connection.server.name, line),
                                                    timeout, token)
        except DeployError as exc:
            return Outcome(connection.server, error=exc)
    if not result.ok:  # its last step lines come with the error, as `    | ` lines
        return Outcome(connection.server, error=remote_failure(connection.server, result))
    lines = result.stdout.strip().splitlines()
    return Outcome(connection.server, value=lines[-1] if lines else None)


async def _build_everywhere(fleet: FleetConfig, connections: list[Connection], ref: str, token: str) -> str:
    gate = asyncio.Semaphore(fleet.parallel)
    outcomes = await asyncio.gather(*(_release_on(c, ref, token, gate, fleet.timeouts.build) for c in connections))
    _raise_build_failure(outcomes)
    authority = fleet.migrations_server.name
    sha = next(outcome.value for outcome in outcomes if outcome.server.name == authority)
    # A branch that moved between two servers' fetches: the migrations server's sha wins.
    others = [c for c, outcome in zip(connections, outcomes) if outcome.value != sha]
    if others:
        _raise_build_failure(await asyncio.gather(*(_release_on(c, sha, token, gate, fleet.timeouts.build)
                                                    for c in others)))
    return sha


def _raise_build_failure(outcomes: list[Outcome]) -> None:
    error = worst(outcomes)
    if error is not None:
        error.hint = "nothing live was changed on any server"
        raise error


async def same_release(connections: list[Connection], sha: str) -> None:
    """The release must be the same bytes everywhere before anything can go live."""
    answers = await asyncio.gather(*(c.deployer_json(list_argv(c.server)) for c in connections))
    seen = {}
    for connection, answer in zip(connections, answers):
        row = next((r for r in answer.get("releases", []) if r.get("sha") == sha), None)
        if row is None:
            raise OperationFailed(f"{connection.server.name}: releases/{sha[:12]} is not complete after its build")
        seen[connection.server.name] = (row.get("tree_digest"), row.get("requirements_key"))
    first_name, first = next(iter(seen.items()))
    for name, pair in seen.items():
        for index, what in enumerate(("tree digest", "requirements key")):
            if pair[index] != first[index] or pair[index] is None:
                raise OperationFailed(
                    f"{name}: releases/{sha[:12]} has another {what} than on {first_name}",
                    hint="nothing live was changed; rebuild it there with `deployer release --rebuild`")


def plan(fleet: FleetConfig, command: list[str], as_json: bool) -> None:
    """`--plan` across servers: each server's own plan of the command, side by side."""

    outcomes = asyncio.run(on_each(fleet, lambda connection: plan_of(connection, command)))
    if as_json:
        json.dump({"command": command[0], "migrations_server": fleet.migrations_server.name, "servers": [
            {"name": o.server.name, "plan": o.value, "error": o.error.message if o.error else None} for o in outcomes
        ]}, sys.stdout, indent=2)
        print()
    else:
        print(f"plan: {shown_command(command)} on {len(outcomes)} server(s) (nothing is changed; no lock is taken)")
        if command[0] in ("deploy", "activate", "rollback"):
            print(f"[all] migrations run once, on {fleet.migrations_server.name}; the others leave the schema to it")
        for outcome in outcomes:
            _print_plan(outcome)
    error = worst(outcomes)
    if error is not None:
        raise error
    for outcome in outcomes:
        if outcome.value.get("refused"):
            raise OperationFailed(f"{outcome.server.name}: {outcome.value['refused']}",
                                  hint="the real run would change nothing on any server")


def _print_plan(outcome: Outcome) -> None:
    name = outcome.server.name
    if outcome.error is not None:
        print(f"[{name}] UNREACHABLE: {outcome.error.message}")
        return
    for number, step in enumerate(outcome.value.get("steps", []), 1):
        print(f"[{name}] " + dotted(f"[{number}] {step['step']} ") + f" {step['detail']}")


def list_releases(fleet: FleetConfig, as_json: bool) -> None:
    """`list` across servers: each server's releases, one block per server."""

    async def ask(connection: Connection):
        return await connection.deployer_json(list_argv(connection.server))

    outcomes = asyncio.run(on_each(fleet, ask))
    if as_json:
        json.dump({"servers": [{"name": o.server.name, "releases": (o.value or {}).get("releases"),
                                "error": o.error.message if o.error else None} for o in outcomes]},
                  sys.stdout, indent=2)
        print()
    else:
        for outcome in outcomes:
            name = outcome.server.name
            if outcome.error is not None:
                print(f"[{name}] UNREACHABLE: {outcome.error.message}")
                continue
            rows = outcome.value.get("releases", [])
            if not rows:
                print(f"[{name}] no releases built yet")
            for row in rows:
                state = row["state"] + (" +standby" if row.get("standby") else "")
                print(f"[{name}] {row['sha'][:12]}  {state:20}  {row.get('subject', '')}")
    error = worst(outcomes)
    if error is not None:
        raise error


def prune(fleet: FleetConfig, keep: int | None, dry_run: bool) -> None:
    """`prune` on every server under the orchestrator's lock; each keeps its own rollback target."""

    async def run() -> list[Outcome]:
        async with locked(fleet) as (connections, token):
            async def one(connection: Connection) -> Outcome:
                result = await connection.run(prune_argv(connection.server, keep, dry_run), token=token)
                say_as(connection.server.name, result.stdout + result.stderr)
                if not result.ok:
                    return Outcome(connection.server, error=remote_failure(connection.server, result))
                return Outcome(connection.server, value=True)
            return list(await asyncio.gather(*(one(c) for c in connections)))

    error = worst(asyncio.run(run()))
    if error is not None:
        raise error
