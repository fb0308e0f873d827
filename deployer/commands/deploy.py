"""`deployer deploy <commit-ish>`: release, then activate, under one lock."""

from __future__ import annotations

from deployer.commands.activate import activate
from deployer.commands.release import release
from deployer.config import Config
from deployer.paths import Paths
from deployer.steps import say


def main(config: Config, paths: Paths, ref: str) -> None:
    sha = release(config, paths, ref)
    say("")
    activate(config, paths, sha, action="deploy")
    print(sha)
