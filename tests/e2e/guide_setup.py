"""A server set up the way docs/server-guide.md says: its set-up blocks run in order inside a
booted container, with the few that need the outside world replaced (no network in the
container, a test CA for Let's Encrypt). Used by the single-server and the multi-server tiers.
"""

from __future__ import annotations

import re
import time

import yaml

import e2e_machine as m
from e2e_machine import CA_IN_CONTAINER, SHARE, WHEELHOUSE

LIVE = f"/etc/letsencrypt/live/{m.DOMAIN}"


def _replace_apt(c: m.Container, block: m.GuideBlock) -> None:
    """No network in the container: the guide's packages come with the rootfs recipe. Check it."""
    match = re.search(r"apt-get install -y (.+)", block.body)
    assert match, f"guide line {block.line}: no apt-get install line"
    wanted = [p for p in match.group(1).split() if p not in m.GUIDE_PACKAGES_NOT_IN_ROOTFS]
    for package in wanted:
        status = c.run(f"dpkg-query -W -f='${{Status}}' {package}", check=False).stdout
        assert status == "install ok installed", f"guide package {package} is not in the rootfs recipe ({status!r})"


def _replace_push(c: m.Container, block: m.GuideBlock) -> None:
    """`git push production main` from the workstation = the working tree's bundle fetched into
    the bare repository, as the deploy user (who owns it)."""
    c.run(f"sudo -u deploy git -C /home/deploy/apps/skinmenu.git fetch -q {SHARE}/source.bundle main:main")


def _replace_certbot(c: m.Container, block: m.GuideBlock) -> None:
    """certbot's result, made by the test CA: the same files at the same paths."""
    c.run(f"install -d -m 0755 /etc/letsencrypt/live /etc/letsencrypt/live/{m.DOMAIN}")
    c.run(f"install -m 0644 {SHARE}/tls/fullchain.pem {LIVE}/fullchain.pem")
    c.run(f"install -m 0600 {SHARE}/tls/privkey.pem {LIVE}/privkey.pem")
    c.run(f"install -D -m 0644 {SHARE}/tls/ca.crt {CA_IN_CONTAINER}")


def run_guide_setup(c: m.Container) -> list[str]:
    """Run the guide's set-up blocks in order; returns a log of what ran."""
    blocks = m.guide_blocks()
    named = {b.name: b for b in blocks if b.action == "run" and b.name}

    def run(block: m.GuideBlock) -> None:
        c.run("set -e -o pipefail\n" + block.body, shell="/bin/bash")

    hooks = {
        "apt": _replace_apt,
        "push": _replace_push,
        "certbot": _replace_certbot,
        "deployer-offline": lambda c, b: run(named["deployer-offline"]),
    }
    done, seen_test = [], False
    for block in blocks:
        if block.action in ("test", "manual"):
            seen_test = seen_test or block.action == "test"
            continue
        if block.action == "run" and block.name:
            continue  # a named block runs where a `replace` names it
        assert not seen_test, f"guide line {block.line}: a set-up block after the first deploy"
        started = time.monotonic()
        if block.action == "run":
            run(block)
        elif block.action == "replace":
            assert block.name in hooks, f"guide line {block.line}: no e2e replacement for '{block.name}'"
            hooks[block.name](c, block)
        else:
            raise AssertionError(f"guide line {block.line}: unknown e2e action '{block.action}'")
        done.append(f"guide line {block.line}: {block.action} {block.name} ({time.monotonic() - started:.1f}s)")
        m.log(done[-1])
    return done


def adapt_config(c: m.Container) -> dict:
    """The server's releases.yml is the committed one (checked), except for what this machine
    differs in: its Python, the offline wheelhouse, and the test CA for the smoke test."""
    text = c.read("/home/deploy/releases.yml")
    config = yaml.safe_load(text)
    committed = yaml.safe_load((m.REPO / "releases.yml").read_text())
    assert config == committed, "the guide's releases.yml copy differs from the committed file"
    config["python"] = "/usr/bin/python3"
    config["install"] = {"find_links": WHEELHOUSE, "offline": True}
    config["smoke"]["cacert"] = CA_IN_CONTAINER
    header = ("# tests/e2e: the committed releases.yml with this container's python, offline install\n"
              "# from the wheelhouse, and the test CA for the smoke test.\n")
    c.write("/home/deploy/releases.yml", header + yaml.safe_dump(config, sort_keys=False), owner="deploy:deploy")
    return config
