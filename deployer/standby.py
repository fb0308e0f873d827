"""Two colours of the app service, blue and green (docs/design.md §16): slot links, the socket
link nginx proxies to, which colour is live, starting and stopping one, and the warm standby.

    deploy_to/slots/<colour> -> ../releases/<sha>     what <colour> starts from (resolved once, at start)
    deploy_to/live.sock      -> <service.socket of the live colour>

Both links are replaced the way `current` is: a symlink at a temporary name, rename(2) over the
link, fsync of the directory. nginx connects to live.sock for every upstream connection, and
connect(2) follows the link, so switching colours needs no reload.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from deployer.config import COLOURS, Config
from deployer.paths import SHA_RE, Paths, current_sha, fsync_dir
from deployer.proc import clean_env, run
from deployer.switch import replace_link

START_TIMEOUT = 120
STOP_TIMEOUT = 60
LIVE_SOCKET = "live.sock"


def slots_dir(paths: Paths) -> Path:
    return paths.root / "slots"


def slot(paths: Paths, colour: str) -> Path:
    return slots_dir(paths) / colour


def socket_link(paths: Paths) -> Path:
    return paths.root / LIVE_SOCKET


def standby_file(paths: Paths) -> Path:
    return paths.state / "standby.json"


def other(colour: str) -> str:
    return COLOURS[1] if colour == COLOURS[0] else COLOURS[0]


def slot_sha(paths: Paths, colour: str) -> str | None:
    """The release <colour>'s slot names, or None (no slot, or not a release that exists)."""
    try:
        name = Path(os.readlink(slot(paths, colour))).name
    except OSError:
        return None
    return name if SHA_RE.fullmatch(name) and (paths.releases / name).is_dir() else None


def point_slot_at(paths: Paths, colour: str, sha: str) -> None:
    slots_dir(paths).mkdir(exist_ok=True)
    replace_link(slot(paths, colour), os.path.join("..", "releases", paths.release(sha).name))


def live_colour(config: Config, paths: Paths) -> str | None:
    """The colour live.sock points at, or None (no link yet: a first deploy, or a server that
    ran the restart strategy until now)."""
    try:
        target = os.readlink(socket_link(paths))
    except OSError:
        return None
    for colour in COLOURS:
        if target == str(config.service.socket_of(colour)):
            return colour
    return None


def colours_for(config: Config, paths: Paths, sha: str) -> tuple[str, str | None]:
    """(the colour that will serve `sha`, the colour live before it or None): the idle one,
    unless a run killed after its socket rename left the live colour already serving `sha`.
    The run and its --plan both decide here."""
    live = live_colour(config, paths)
    if live is not None and slot_sha(paths, live) == sha and running(config, live):
        old = other(live)
        return live, (old if slot_sha(paths, old) else None)
    return (other(live) if live else COLOURS[0]), live


def idle_colour(config: Config, paths: Paths) -> str:
    live = live_colour(config, paths)
    return other(live) if live else COLOURS[0]


def point_socket_at(config: Config, paths: Paths, colour: str) -> None:
    replace_link(socket_link(paths), str(config.service.socket_of(colour)))


def remove_socket_link(paths: Paths) -> None:
    if socket_link(paths).is_symlink():
        socket_link(paths).unlink()
        fsync_dir(paths.root)


def start_argv(config: Config, colour: str) -> list[str]:
    return config.service.colour_argv(config.service.start or "", colour)


def stop_argv(config: Config, colour: str) -> list[str]:
    return config.service.colour_argv(config.service.stop or "", colour)


def is_active_argv(config: Config, colour: str) -> list[str]:
    return config.service.colour_argv(config.service.is_active or "", colour)


def start(config: Config, colour: str) -> None:
    """Start <colour> from its slot; returns once it is ready (systemd: Type=notify)."""
    run(start_argv(config, colour), env=clean_env(), what=f"start {colour}", timeout=START_TIMEOUT)


def stop(config: Config, colour: str) -> None:
    run(stop_argv(config, colour), env=clean_env(), what=f"stop {colour}", timeout=STOP_TIMEOUT)


def running(config: Config, colour: str) -> bool:
    try:
        proc = subprocess.run(is_active_argv(config, colour), capture_output=True, timeout=30, env=clean_env())
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


# --- The warm standby's window --------------------------------------------------------------


@dataclass(frozen=True)
class Standby:
    colour: str
    sha: str
    until: float  # time.time() after which it is stopped

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.until


def read_standby(paths: Paths) -> Standby | None:
    try:
        data = json.loads(standby_file(paths).read_text())
        standby = Standby(str(data["colour"]), str(data["sha"]), float(data["until"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return standby if standby.colour in COLOURS and SHA_RE.fullmatch(standby.sha) else None


def write_standby(paths: Paths, colour: str, sha: str, seconds: float) -> Standby:
    standby = Standby(colour, sha, time.time() + seconds)
    tmp = paths.state / f".standby-{secrets.token_hex(4)}"
    tmp.write_text(json.dumps({"colour": colour, "sha": sha, "until": standby.until}) + "\n")
    os.replace(tmp, standby_file(paths))
    return standby


def clear_standby(paths: Paths) -> None:
    standby_file(paths).unlink(missing_ok=True)


def warm_standby(config: Config, paths: Paths) -> Standby | None:
    """The idle colour, if it is a standby still inside its window and its slot still names the
    release it was left running with."""
    standby = read_standby(paths)
    if standby is None or standby.expired() or standby.colour == live_colour(config, paths):
        return None
    if slot_sha(paths, standby.colour) != standby.sha:
        return None
    return standby


def stop_expired(config: Config, paths: Paths, say=lambda line: None) -> str | None:
    """Stop the idle colour when its window has passed (or when nothing records one: a run killed
    before writing it). Run by every command that takes the deploy lock, and by the
    skinmenu-standby.timer through `deployer expire-standby`. Returns what it stopped."""
    if not config.service.standby:
        return None
    live = live_colour(config, paths)
    if live is None:
        return None
    idle = other(live)
    standby = read_standby(paths)
    if standby is not None and standby.colour == idle and not standby.expired():
        return None
    if slot_sha(paths, idle) == current_sha(paths):
        return None  # an activation killed between its two renames: the next activate finishes it
    if not running(config, idle):
        if standby is not None:
            clear_standby(paths)
        return None
    stop(config, idle)
    clear_standby(paths)
    say(f"stopped {idle} ({(slot_sha(paths, idle) or '?')[:12]}): its standby window had passed")
    return idle
