"""`deployer deploy <commit-ish>`: release, then activate, under one lock."""

from __future__ import annotations

import time

from deployer import hooks, preflight
from deployer.commands.activate import activate
from deployer.commands.release import release
from deployer.config import Config
from deployer.paths import Paths
from deployer.steps import say


def main(config: Config, paths: Paths, ref: str) -> None:
    preflight.require_switchable(config, paths)  # before a build: the switch would refuse after it
    started = time.monotonic()
    with hooks.on_failure(config, paths, "deploy") as attempt:
        sha = release(config, paths, ref, action="deploy", attempt=attempt)
        say("")
        activate(config, paths, sha, action="deploy", attempt=attempt, built_in=time.monotonic() - started)
    print(sha)
