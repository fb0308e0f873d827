"""The production files themselves, checked on the host (no container needed): gixy on the
nginx site, `nginx -t` on it, its media and documents locations, the unit scored offline by
systemd-analyze, the sudoers rule parsed by visudo, the unit's stop timeout aligned with
gunicorn's graceful timeout, and the server guide's shell blocks all tagged for the e2e tier."""

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


def test_systemd_analyze_offline_scores_the_unit_at_most_2(tmp_path):
    analyze = _need("systemd-analyze", "apt-get install systemd")
    # Offline scoring resolves User= etc. only by name; copy so the unit file name is right.
    unit = tmp_path / "skinmenu.service"
    shutil.copy(SERVICE, unit)
    proc = subprocess.run([analyze, "security", "--offline=true", "--no-pager", str(unit)],
                          capture_output=True, text=True)
    match = re.search(r"Overall exposure level for skinmenu\.service: (\d+\.\d+)", proc.stdout + proc.stderr)
    assert match, proc.stdout + proc.stderr
    figure(f"systemd-analyze security --offline=true systemd/skinmenu.service (host): {match.group(1)}")
    assert float(match.group(1)) <= 2.0


def test_unit_files_verify(tmp_path):
    analyze = _need("systemd-analyze", "apt-get install systemd")
    for src in (SERVICE, SOCKET):
        shutil.copy(src, tmp_path / src.name)
    proc = subprocess.run([analyze, "verify", "--man=no", str(tmp_path / "skinmenu.socket"), str(tmp_path / "skinmenu.service")],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), proc.stdout + proc.stderr


def test_sudoers_rule_parses_and_grants_only_the_restart():
    visudo = _need("visudo", "apt-get install sudo")
    proc = subprocess.run([visudo, "-cf", str(SUDOERS)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rules = [line for line in SUDOERS.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert rules == [
        "Cmnd_Alias SKINMENU_RESTART = /usr/bin/systemctl restart skinmenu.service",
        "deploy ALL=(root) NOPASSWD: SKINMENU_RESTART",
    ]
    # The rule must match the command the deployer runs (releases.yml service.restart).
    import yaml

    config = yaml.safe_load((m.REPO / "releases.yml").read_text())
    assert config["service"]["restart"] == "sudo -n /usr/bin/systemctl restart skinmenu.service"


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


def test_stop_timeout_is_aligned_with_gunicorn_graceful_timeout(monkeypatch):
    for name in list(os.environ):
        if name.startswith("GUNICORN_"):
            monkeypatch.delenv(name)
    config = runpy.run_path(str(m.REPO / "app/config/gunicorn.py"))
    stop = unit_settings(SERVICE)["TimeoutStopSec"][0]
    seconds = int(stop.removesuffix("s"))
    assert config["preload_app"] is True  # a release that cannot import fails the restart
    assert config["graceful_timeout"] + 5 <= seconds, (config["graceful_timeout"], stop)


def test_every_shell_block_of_the_server_guide_is_tagged_for_e2e():
    blocks = m.guide_blocks()  # raises on an untagged block
    actions = {b.action for b in blocks}
    assert actions <= {"run", "replace", "test", "manual"}, actions
    assert any(b.action == "test" and b.name == "first-deploy" for b in blocks)
