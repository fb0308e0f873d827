"""`deployer status [--json]`: what is live, what a rollback would go to, and is it healthy."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone

from deployer import history, lock, service, smoke, standby, underway
from deployer.config import Config
from deployer.errors import DeployError
from deployer.paths import Paths, current_sha, describe_current


def colours(config: Config, paths: Paths) -> dict | None:
    """service.strategy: standby (docs/design.md §16): each colour's release, whether it runs,
    which is live, and the warm standby's window. None for the restart strategy."""
    if not config.service.standby:
        return None
    live = standby.live_colour(config, paths)
    warm = standby.read_standby(paths)
    out = {}
    for colour in standby.COLOURS:
        out[colour] = {
            "release": standby.slot_sha(paths, colour),
            "running": standby.running(config, colour),
            "live": colour == live,
            "standby_until": (datetime.fromtimestamp(warm.until, timezone.utc).isoformat(timespec="seconds")
                              if warm and warm.colour == colour and colour != live else None),
        }
    return out


def collect(config: Config, paths: Paths) -> dict:
    live = current_sha(paths)
    try:
        state = service.state(config, standby.live_colour(config, paths) if config.service.standby else None)
    except DeployError as exc:
        state = f"unknown ({exc.message})"
    site = smoke.health(config.smoke)
    entries = history.read(paths)
    recorded = history.last_live(entries)
    return {
        "config": str(config.path),
        "deploy_to": str(config.deploy_to),
        "strategy": config.service.strategy,
        "colours": colours(config, paths),
        "current": live,
        # False after a run was killed between switching `current` and recording it.
        "activation_finished": live is None or recorded == live,
        "finish_with": finish_with(live, recorded),
        "previous": history.rollback_target(entries, live),
        "lock": lock.read_holder(paths),
        "service": state,
        "health": {**site, "serves_current": bool(live) and site.get("release") == live},
    }


def finish_with(live: str | None, recorded: str | None) -> str | None:
    """The command that finishes the run a kill left unfinished (None when nothing is unfinished):
    `activate` of the release in `current` finishes it with the authorisation the killed run
    recorded (a `rollback --migrate` unapplies, a `--force` keeps; deployer/underway.py)."""
    if live is None or live == recorded:
        return None
    return f"deployer activate {live[:12]}"


def _unfinished_line(paths: Paths, data: dict) -> str:
    if data["finish_with"] is None:
        return ""
    # finish_with is set only when current is ahead of history: no need to read history again.
    killed = underway.unfinished(paths, data["current"], recorded=None)
    what = f"a `deployer {killed.command()}` was killed after its switch" if killed else "its activation never finished"
    return f"  ({what}: run `{data['finish_with']}` to finish it)"


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
        unfinished = _unfinished_line(paths, data)
        print(f"config:   {data['config']} (deploy_to {data['deploy_to']})")
        print(f"current:  {data['current'] or '(none: current ' + describe_current(paths) + ')'}{unfinished}")
        print(f"previous: {data['previous'] or '(none)'}")
        print(f"lock:     {holder}")
        print(f"service:  {data['service']}" + (f" ({data['strategy']})" if data["colours"] else ""))
        for colour, info in (data["colours"] or {}).items():
            role = "LIVE" if info["live"] else (f"standby until {info['standby_until']}" if info["standby_until"] else "idle")
            running = "running" if info["running"] else "stopped"
            print(f"{colour + ':':9} {(info['release'] or '(no slot)')[:12]:12}  {running:7}  {role}")
        print(f"health:   {healthy}")
