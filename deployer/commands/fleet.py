"""`status` and `check` across the servers of an orchestrator config (docs/design.md §13).

Each server is asked with its own `deployer` (same version, checked first) and answers in JSON;
this module only gathers the answers, one row per server, and says whether the servers agree.
"""

from __future__ import annotations

import asyncio
import json
import sys

from deployer.fleet import FleetConfig
from deployer.remote import Connection, Outcome, check_argv, on_each, status_argv, worst


def collect_status(fleet: FleetConfig) -> dict:
    async def ask(connection: Connection) -> dict:
        return await connection.deployer_json(status_argv(connection.server))

    outcomes = asyncio.run(on_each(fleet, ask))
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
