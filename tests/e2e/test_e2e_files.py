"""The production files themselves, checked on the host (no container needed): gixy on the
nginx site, `nginx -t` on it, its media and documents locations, the units (the single
skinmenu.service of `service.strategy: restart` and the skinmenu@ colours of `standby`, the
shipped strategy) scored offline by systemd-analyze, the sudoers rules parsed by visudo, the
units' stop timeout aligned with gunicorn's graceful timeout, and the server guide's shell
blocks all tagged for the e2e tier."""

from __future__ import annotations

import json
import os
import re
import runpy
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

import e2e_machine as m
from e2e_machine import figure

SERVICE = m.REPO / "systemd/skinmenu.service"
SOCKET = m.REPO / "systemd/skinmenu.socket"
SUDOERS = m.REPO / "systemd/skinmenu.sudoers"
COLOUR_SERVICE = m.REPO / "systemd/skinmenu@.service"
COLOUR_SOCKET = m.REPO / "systemd/skinmenu@.socket"
STANDBY_SUDOERS = m.REPO / "systemd/skinmenu-standby.sudoers"
SITE = m.REPO / "nginx/skinmenu.conf"


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _need(tool: str, hint: str) -> str:
    path = shutil.which(tool) or next((p for p in (f"/usr/sbin/{tool}", f"/usr/bin/{tool}") if os.path.exists(p)), None)
    if path:
        return path
    if _ci():
        pytest.fail(f"{tool} is required under CI=true ({hint})", pytrace=False)
    m.REPORT["not_run"] = m.REPORT["not_run"] or f"{tool} missing ({hint})"
    pytest.skip(f"{tool} not installed ({hint})")


def unit_settings(path: Path) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def _gixy() -> list[str]:
    """gixy-ng: the installed one, else a venv of it cached next to the rootfs."""
    try:
        import gixy  # noqa: F401

        return [sys.executable, "-m", "gixy"]
    except ImportError:
        pass
    found = shutil.which("gixy")
    if found:
        return [found]
    env = m.CACHE_ROOT / "gixy-venv"
    python = env / "bin/python"
    if not (env / ".complete").exists():
        shutil.rmtree(env, ignore_errors=True)
        venv.create(env, with_pip=True)
        proc = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "gixy-ng"],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            if _ci():
                pytest.fail(f"cannot install gixy-ng: {proc.stderr[-2000:]}", pytrace=False)
            pytest.skip("gixy-ng not installed and not installable here")
        (env / ".complete").write_text("")
    return [str(python), "-m", "gixy"]


def test_gixy_reports_nothing_for_the_nginx_site():
    proc = subprocess.run([*_gixy(), "--format", "json", str(SITE)], capture_output=True, text=True)
    issues = json.loads(proc.stdout or "[]")
    figure(f"gixy-ng on nginx/skinmenu.conf: {len(issues)} issue(s)"
           + ("" if not issues else ": " + "; ".join(f"{i.get('plugin')}: {i.get('summary')}" for i in issues)))
    assert proc.returncode == 0 and issues == [], proc.stdout + proc.stderr


def nginx_tree(text: str) -> list[tuple[str, list[str], list]]:
    """The nginx file as (directive, args, children) tuples; enough syntax for our site file."""
    tokens = re.findall(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'|#[^\n]*|[{};]|[^\s{};"\'#]+', text)
    tokens = [t for t in tokens if not t.startswith("#")]
    stack: list[list] = [[]]
    words: list[str] = []
    for token in tokens:
        if token == ";":
            stack[-1].append((words[0], words[1:], []))
            words = []
        elif token == "{":
            block = (words[0], words[1:], [])
            stack[-1].append(block)
            stack.append(block[2])
            words = []
        elif token == "}":
            stack.pop()
        else:
            words.append(token.strip("\"'"))
    assert len(stack) == 1 and not words, "unbalanced braces in the nginx site"
    return stack[0]


def https_site_locations() -> dict[str, list]:
    """The locations of the skinmenu.example.com HTTPS server: 'modifier path' -> directives."""
    for name, _, body in nginx_tree(SITE.read_text()):
        directives = {(d, tuple(a)) for d, a, _ in body}
        if name == "server" and ("server_name", ("skinmenu.example.com",)) in directives \
                and any(d == "listen" and "ssl" in a for d, a in directives):
            return {" ".join(args): children for d, args, children in body if d == "location"}
    raise AssertionError("no HTTPS server for skinmenu.example.com in nginx/skinmenu.conf")


def directive(children: list, name: str) -> list[list[str]]:
    return [args for d, args, _ in children if d == name]


def test_documents_under_media_are_internal_so_only_wagtails_view_serves_them():
    """/media/documents/<name> would bypass a private collection; Wagtail's view
    (/documents/<id>/<name>, proxied) is the only way to a document."""
    locations = https_site_locations()
    documents = locations.get("^~ /media/documents/")
    assert documents is not None, sorted(locations)
    assert directive(documents, "internal") == [[]], documents
    # Nothing to serve even after an internal redirect: no root/alias of its own.
    assert not directive(documents, "alias") and not directive(documents, "root"), documents
    # No regex location may get at media paths first (a `^~` prefix stops regex matching
    # only for the locations it wins); the dotfile rule is the only server-level regex.
    regexes = [key for key in locations if key.startswith(("~", "~*"))]
    assert regexes == ["~ /\\.(?!well-known/)"], regexes


def test_media_refuses_symlinks_and_listings_and_never_runs_anything():
    media = https_site_locations()["^~ /media/"]
    assert directive(media, "alias") == [["/home/deploy/shared/media/"]]
    symlinks = directive(media, "disable_symlinks")
    assert len(symlinks) == 1 and symlinks[0][0] == "on", symlinks
    assert symlinks[0][1:] in ([], ["from=$document_root"]), symlinks
    assert directive(media, "autoindex") == [["off"]]
    handlers = {"proxy_pass", "fastcgi_pass", "uwsgi_pass", "scgi_pass", "grpc_pass", "memcached_pass",
                "ssi", "perl", "js_content", "content_by_lua_block"}
    assert not [d for d, _, _ in media if d in handlers], media


def test_nginx_t_accepts_the_site(tmp_path):
    """The host's nginx parses the site file (certificate paths pointed at a throw-away pair)."""
    nginx = _need("nginx", "apt-get install nginx")
    tls = m.make_test_ca(tmp_path / "tls")
    live = f"/etc/letsencrypt/live/{m.DOMAIN}"
    site = SITE.read_text().replace(f"{live}/fullchain.pem", str(tls["fullchain"])) \
                           .replace(f"{live}/privkey.pem", str(tls["privkey"]))
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{ access_log off; include {tmp_path}/site.conf; }}\n"
    )
    proc = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "test is successful" in proc.stderr, proc.stdout + proc.stderr


def _offline_score(analyze: str, unit: Path) -> float:
    proc = subprocess.run([analyze, "security", "--offline=true", "--no-pager", str(unit)],
                          capture_output=True, text=True)
    match = re.search(rf"Overall exposure level for {re.escape(unit.name)}: (\d+\.\d+)", proc.stdout + proc.stderr)
    assert match, proc.stdout + proc.stderr
    return float(match.group(1))


def test_systemd_analyze_offline_scores_the_unit_at_most_2(tmp_path):
    analyze = _need("systemd-analyze", "apt-get install systemd")
    # Offline scoring resolves User= etc. only by name; copy so the unit file name is right.
    unit = tmp_path / "skinmenu.service"
    shutil.copy(SERVICE, unit)
    score = _offline_score(analyze, unit)
    figure(f"systemd-analyze security --offline=true systemd/skinmenu.service (host): {score}")
    assert score <= 2.0


def test_systemd_analyze_offline_scores_a_colour_at_most_half(tmp_path):
    """The issue's bound for the standby colours: exposure still <= 0.5."""
    analyze = _need("systemd-analyze", "apt-get install systemd")
    unit = tmp_path / "skinmenu@blue.service"  # an instance of the template, as systemd loads it
    shutil.copy(COLOUR_SERVICE, unit)
    score = _offline_score(analyze, unit)
    figure(f"systemd-analyze security --offline=true systemd/skinmenu@.service as skinmenu@blue (host): {score}")
    assert score <= 0.5


def test_unit_files_verify(tmp_path):
    analyze = _need("systemd-analyze", "apt-get install systemd")
    # skinmenu-standby.{timer,service} name /home/deploy/.local/bin/deployer: verified in the
    # booted container (test_e2e_production.py), where the guide has installed it.
    for src in (SERVICE, SOCKET, COLOUR_SERVICE, COLOUR_SOCKET):
        shutil.copy(src, tmp_path / src.name)
    for colour in ("blue", "green"):
        shutil.copy(COLOUR_SOCKET, tmp_path / f"skinmenu@{colour}.socket")
        shutil.copy(COLOUR_SERVICE, tmp_path / f"skinmenu@{colour}.service")
    units = ["skinmenu.socket", "skinmenu.service", "skinmenu@blue.socket", "skinmenu@blue.service",
             "skinmenu@green.socket", "skinmenu@green.service"]
    proc = subprocess.run([analyze, "verify", "--man=no", *(str(tmp_path / u) for u in units)],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), proc.stdout + proc.stderr


def sudoers_rules(path: Path) -> list[str]:
    """The rule lines, continuation lines joined, whitespace collapsed."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    return [" ".join(line.split()) for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_sudoers_rule_parses_and_grants_only_the_restart():
    visudo = _need("visudo", "apt-get install sudo")
    proc = subprocess.run([visudo, "-cf", str(SUDOERS)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sudoers_rules(SUDOERS) == [
        "Cmnd_Alias SKINMENU_RESTART = /usr/bin/systemctl restart skinmenu.service",
        "deploy ALL=(root) NOPASSWD: SKINMENU_RESTART",
    ]
    # The rule must match the command the deployer runs (releases.yml service.restart).
    import yaml

    config = yaml.safe_load((m.REPO / "releases.yml").read_text())
    assert config["service"]["restart"] == "sudo -n /usr/bin/systemctl restart skinmenu.service"


def test_standby_sudoers_grants_exactly_start_and_stop_of_the_two_colours():
    visudo = _need("visudo", "apt-get install sudo")
    proc = subprocess.run([visudo, "-cf", str(STANDBY_SUDOERS)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [f"/usr/bin/systemctl {verb} skinmenu@{colour}.service"
             for colour in ("blue", "green") for verb in ("start", "stop")]
    assert sudoers_rules(STANDBY_SUDOERS) == [
        "Cmnd_Alias SKINMENU_STANDBY = " + ", ".join(lines),
        "deploy ALL=(root) NOPASSWD: SKINMENU_STANDBY",
    ]
    assert "*" not in STANDBY_SUDOERS.read_text()  # no wildcard can reach another unit
    # The lines are exactly the commands the shipped releases.yml runs, for both colours.
    import yaml

    service = yaml.safe_load((m.REPO / "releases.yml").read_text())["service"]
    assert service["strategy"] == "standby"
    run = sorted(service[verb].format(colour=colour).removeprefix("sudo -n ")
                 for colour in ("blue", "green") for verb in ("start", "stop"))
    assert run == sorted(lines)
    assert not service["is_active"].startswith("sudo")  # is-active needs no root


def test_service_unit_follows_the_design():
    unit = unit_settings(SERVICE)
    assert unit["Type"] == ["notify"]
    assert unit["Requires"] == ["skinmenu.socket"]
    assert unit["User"] == ["skinmenu"]
    assert "RuntimeDirectory" not in unit  # a restart would delete it under the socket
    exec_start = unit["ExecStart"][0]
    assert "readlink -e /home/deploy/current" in exec_start
    assert '"$$r/venv/bin/python" -m gunicorn' in exec_start and "venv/bin/gunicorn" not in exec_start
    assert "--no-control-socket" in exec_start
    assert unit["EnvironmentFile"] == ["/etc/skinmenu/skinmenu.env"]
    assert unit["KillMode"] == ["mixed"]
    assert set(unit["ReadWritePaths"][0].split()) == {"/home/deploy/shared/media", "/home/deploy/shared/db"}
    socket = unit_settings(SOCKET)
    assert socket["ListenStream"] == ["/run/skinmenu/skinmenu.sock"]
    assert (socket["SocketUser"], socket["SocketGroup"], socket["SocketMode"]) == (["root"], ["www-data"], ["0660"])


def test_colour_units_follow_the_design():
    """skinmenu@<colour>: the single unit's process and sandbox, started from its own slot, on its
    own socket (deploy may connect to smoke-test it; nginx through live.sock)."""
    unit, single = unit_settings(COLOUR_SERVICE), unit_settings(SERVICE)
    assert unit["Type"] == ["notify"]
    assert unit["Requires"] == ["skinmenu@%i.socket"]
    assert unit["User"] == ["skinmenu"]
    assert "RuntimeDirectory" not in unit
    exec_start = unit["ExecStart"][0]
    assert "readlink -e /home/deploy/slots/%i" in exec_start and "current" not in exec_start
    assert '"$$r/venv/bin/python" -m gunicorn' in exec_start and "--no-control-socket" in exec_start
    same = ("EnvironmentFile", "KillMode", "TimeoutStopSec", "ReadWritePaths", "ProtectSystem", "ProtectHome",
            "PrivateNetwork", "RestrictAddressFamilies", "CapabilityBoundingSet", "SystemCallFilter",
            "NoNewPrivileges", "PrivateUsers", "MemoryDenyWriteExecute")
    assert {k: unit.get(k) for k in same} == {k: single.get(k) for k in same}
    socket = unit_settings(COLOUR_SOCKET)
    assert socket["ListenStream"] == ["/run/skinmenu/%i.sock"]
    assert (socket["SocketUser"], socket["SocketGroup"], socket["SocketMode"]) == (["deploy"], ["www-data"], ["0660"])
    import yaml

    service = yaml.safe_load((m.REPO / "releases.yml").read_text())["service"]
    assert service["socket"] == "/run/skinmenu/{colour}.sock"
    upstream = [args for d, args, _ in nginx_tree(SITE.read_text()) if d == "upstream"]
    assert upstream, "no upstream in the nginx site"
    block = next(children for d, args, children in nginx_tree(SITE.read_text()) if d == "upstream")
    assert directive(block, "server")[0][0] == "unix:/home/deploy/live.sock"
    assert not directive(block, "keepalive")  # a kept-alive connection would outlive a switch


def test_stop_timeout_is_aligned_with_gunicorn_graceful_timeout(monkeypatch):
    for name in list(os.environ):
        if name.startswith("GUNICORN_"):
            monkeypatch.delenv(name)
    config = runpy.run_path(str(m.REPO / "app/config/gunicorn.py"))
    assert config["preload_app"] is True  # a release that cannot import fails the restart/start
    for unit in (SERVICE, COLOUR_SERVICE):
        stop = unit_settings(unit)["TimeoutStopSec"][0]
        seconds = int(stop.removesuffix("s"))
        assert config["graceful_timeout"] + 5 <= seconds, (unit.name, config["graceful_timeout"], stop)


def test_every_shell_block_of_the_server_guide_is_tagged_for_e2e():
    blocks = m.guide_blocks()  # raises on an untagged block
    actions = {b.action for b in blocks}
    assert actions <= {"run", "replace", "test", "manual"}, actions
    assert any(b.action == "test" and b.name == "first-deploy" for b in blocks)
