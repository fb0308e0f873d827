"""`deployer status [--json]`: what is live, what a rollback would go to, and is it healthy."""

from __future__ import annotations

import json
import sys

from deployer import history, lock, service, smoke
from deployer.config import Config
from deployer.errors import DeployError
from deployer.paths import Paths, current_sha


def collect(config: Config, paths: Paths) -> dict:
    live = current_sha(paths)
    try:
        state = service.state(config)
    except DeployError as exc:
        state = f"unknown ({exc.message})"
    site = smoke.health(config.smoke)
    entries = history.read(paths)
    return {
        "current": live,
        # False after a run was killed between switching `current` and recording it.
        "activation_finished": live is None or history.last_live(entries) == live,
        "previous": history.rollback_target(entries, live),
        "lock": lock.read_holder(paths),
        "service": state,
        "health": {**site, "serves_current": bool(live) and site.get("release") == live},
    }


def main(config: Config, paths: Paths, as_json: bool) -> None:
    data = collect(config, paths)
    if as_json:
        json.dump(data, sys.stdout, indent=2)
        print()
    else:
        site = data["health"]
        holder = lock.describe_holder(data["lock"]) if data["lock"] else "free"
        if site.get("ok"):
            served = str(site.get("release"))[:12]
            verdict = "ok" if site["serves_current"] else "SERVES ANOTHER RELEASE"
            healthy = f"{verdict} (/healthz reports {served})"
        else:
            healthy = f"FAILING ({site.get('error') or 'HTTP ' + str(site.get('http_status'))})"
        unfinished = "" if data["activation_finished"] else (
            f"  (its activation never finished: run `deployer activate {data['current'][:12]}`)")
        print(f"current:  {data['current'] or '(none)'}{unfinished}")
        print(f"previous: {data['previous'] or '(none)'}")
        print(f"lock:     {holder}")
        print(f"service:  {data['service']}")
        print(f"health:   {healthy}")
