#!/usr/bin/env python3
"""`make demo`: a real local deploy of Skinmenu that looks like production, with no root and no systemd.

It clones this repository into .demo/src, adds a second commit with a visible change, and drives
the real `deployer` against a scratch deploy root (.demo/deploy): release + activate of both
commits, then rollback and list. The front door is an unprivileged nginx on 127.0.0.1:PORT
(scripts/demo-nginx.conf: production's locations, /static/ aliased to current/staticfiles/),
in front of two gunicorns, blue and green, on unix sockets (service.strategy: standby,
docs/design.md §16), run by scripts/local-service (the stand-in for systemd); nginx proxies to
.demo/deploy/live.sock, the link to the live colour's socket. Without nginx, local-service's
stand-in front door serves PORT instead, unstyled, and the demo says so.
It creates an admin with a fresh random password and prints it. The site keeps serving when
the demo ends; `make demo-stop` stops it.
"""

from __future__ import annotations

import argparse
import grp
import http.cookiejar
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / ".demo"
DEPLOY_TO = DEMO / "deploy"
SOURCE = DEMO / "src"
ENV_FILE = DEMO / "skinmenu.env"
CONFIG = DEMO / "releases.yml"
STATE = DEMO / "demo.json"
NGINX_DIR = DEMO / "nginx"
NGINX_TEMPLATE = REPO / "scripts" / "demo-nginx.conf"
LOGIN_FILE = DEMO / "admin-login.txt"
ADMIN_USER = "admin"
SETTINGS = "config.settings.production"
GIT_ENV = {"GIT_AUTHOR_NAME": "Skinmenu Demo", "GIT_AUTHOR_EMAIL": "demo@skinmenu.invalid",
           "GIT_COMMITTER_NAME": "Skinmenu Demo", "GIT_COMMITTER_EMAIL": "demo@skinmenu.invalid"}


def banner(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def loud(text: str) -> None:
    print(f"\n{'!' * 78}\n{text}\n{'!' * 78}", flush=True)


def sh(*argv, cwd=None, env=None, capture=False) -> str:
    result = subprocess.run(argv, cwd=cwd, env={**os.environ, **GIT_ENV, **(env or {})},
                            text=True, stdout=subprocess.PIPE if capture else None)
    if result.returncode != 0:
        sys.exit(f"demo: `{' '.join(map(str, argv))}` failed with exit code {result.returncode}")
    return (result.stdout or "").strip()


def service(colour: str, action: str) -> list[str]:
    """One colour of service.strategy: standby (docs/design.md §16), as skinmenu@<colour>.service."""
    return [sys.executable, str(REPO / "scripts" / "local-service"), "--root", str(DEPLOY_TO),
            "--colour", colour, "--socket", str(DEPLOY_TO / "run" / f"{colour}.sock"),
            "--env-file", str(ENV_FILE), action]


def front_door(action: str, port: int = 0) -> list[str]:
    """Without nginx: local-service's stand-in front door on the demo port, to live.sock."""
    return [sys.executable, str(REPO / "scripts" / "local-service"), "--root", str(DEPLOY_TO),
            "--bind", f"127.0.0.1:{port}", action]


def deployer(*args: str) -> str:
    print(f"$ deployer {' '.join(args)}", flush=True)
    result = subprocess.run([sys.executable, "-m", "deployer", "--config", str(CONFIG), *args],
                            stdout=subprocess.PIPE, text=True)
    if result.stdout:
        print(result.stdout, end="", flush=True)
    if result.returncode != 0:
        sys.exit(f"demo: deployer {args[0]} failed (exit {result.returncode}); see the lines above")
    return result.stdout.strip()


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- nginx -------------------------------------------------------------------------------------

def find_nginx() -> str | None:
    """nginx on PATH, or in /usr/sbin (not on a normal user's PATH on Debian)."""
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)


def mime_types(nginx: str) -> str:
    """The mime.types beside the nginx's own compiled-in config file."""
    info = subprocess.run([nginx, "-V"], capture_output=True, text=True).stderr
    match = re.search(r"--conf-path=(\S+)", info)
    conf_dir = Path(match.group(1)).parent if match else Path("/etc/nginx")
    return str(conf_dir / "mime.types")


def user_directive() -> str:
    """Workers run as the invoking user. nginx only switches users when started as root (it
    would pick `nobody`), so the directive names root's own user then and is left out otherwise."""
    if os.geteuid() != 0:
        return "# (not root: nginx runs as the invoking user)"
    return f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};"


def render_nginx_conf(*, nginx: str, prefix: Path, listen: str, upstream: str, deploy_to: Path) -> str:
    """scripts/demo-nginx.conf with its @@NAME@@ placeholders filled in (absolute paths, no quoting needed)."""
    values = {"USER_DIRECTIVE": user_directive(), "PREFIX": str(prefix), "LISTEN": listen,
              "UPSTREAM": upstream, "DEPLOY_TO": str(deploy_to), "MIME_TYPES": mime_types(nginx)}
    text = NGINX_TEMPLATE.read_text()
    for name, value in values.items():
        text = text.replace(f"@@{name}@@", value)
    if re.search(r"@@[A-Z_]+@@", text):
        raise ValueError("demo-nginx.conf has a placeholder render_nginx_conf does not fill")
    return text


def nginx_argv(nginx: str, prefix: Path) -> list[str]:
    return [nginx, "-p", f"{prefix}/", "-e", str(prefix / "error.log"), "-c", str(prefix / "nginx.conf")]


def start_nginx(nginx: str, prefix: Path, listen: str, upstream: str, deploy_to: Path) -> None:
    """Write the config, test it, start nginx (it daemonizes; its pid is in prefix/nginx.pid)."""
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    (prefix / "nginx.conf").write_text(render_nginx_conf(
        nginx=nginx, prefix=prefix, listen=listen, upstream=upstream, deploy_to=deploy_to))
    test = subprocess.run([*nginx_argv(nginx, prefix), "-t", "-q"], capture_output=True, text=True)
    if test.returncode != 0:
        raise RuntimeError(f"nginx -t failed:\n{test.stderr}")
    run = subprocess.run(nginx_argv(nginx, prefix), capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"nginx did not start:\n{run.stderr}")


def stop_nginx(prefix: Path) -> None:
    """SIGTERM (fast shutdown) to the master in prefix/nginx.pid, then wait for it to go."""
    try:
        pid = int((prefix / "nginx.pid").read_text())
        os.kill(pid, signal.SIGTERM)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)


# --- the demo ------------------------------------------------------------------------------------

def stop_previous_demo() -> None:
    try:
        state = json.loads(STATE.read_text())
    except (FileNotFoundError, ValueError):
        return
    for colour in ("blue", "green"):
        if (DEPLOY_TO / "run" / f"gunicorn-{colour}.pid").exists():
            subprocess.run(service(colour, "stop"), check=False)
    subprocess.run(front_door("front-stop"), check=False)
    stop_nginx(NGINX_DIR)
    STATE.unlink()


def write_config(port: int, app_port: int, python: str, front_door: bool) -> None:
    ENV_FILE.write_text(
        f"DJANGO_SECRET_KEY={secrets.token_urlsafe(50)}\n"
        "DJANGO_ALLOWED_HOSTS=127.0.0.1,localhost\n"
        f"DJANGO_CSRF_TRUSTED_ORIGINS=http://127.0.0.1:{port},http://localhost:{port}\n"
        f"WAGTAILADMIN_BASE_URL=http://127.0.0.1:{port}\n"
        "# plain HTTP on 127.0.0.1: no certificate here, so no redirect to https\n"
        "DJANGO_SECURE_SSL_REDIRECT=false\n"
    )
    ENV_FILE.chmod(0o600)
    start, stop, is_active = (" ".join(service("{colour}", action)) for action in ("start", "stop", "status"))
    check_static = ("true    # a hashed file of the new release, through the demo's nginx" if front_door
                    else "false   # NO NGINX: nothing serves /static/ (see the demo's warning)")
    CONFIG.write_text(f"""# The demo's deploy configuration: releases.yml with local paths and a local service.
app: skinmenu
repo: src
deploy_to: deploy
python: {python}
keep_releases: 5
django:
  project_dir: app
  settings: {SETTINGS}
  requirements: app/requirements.txt
env_file: skinmenu.env
required_env: [DJANGO_SECRET_KEY, DJANGO_ALLOWED_HOSTS, DJANGO_CSRF_TRUSTED_ORIGINS, WAGTAILADMIN_BASE_URL]
shared_dirs: [media, db]
service:
  strategy: standby       # two gunicorns, blue and green, on unix sockets; the front door follows live.sock
  standby_seconds: 600
  start: {start}
  stop: {stop}
  is_active: {is_active}
  socket: {DEPLOY_TO}/run/{{colour}}.sock
smoke:
  url: http://127.0.0.1:{port}
  check_static: {check_static}
  timeout: 30
""")


def manage(*args: str, env: dict | None = None) -> None:
    """The live release's own manage.py, in its venv, with the demo's env file (as the service has)."""
    values = dict(line.split("=", 1) for line in ENV_FILE.read_text().splitlines()
                  if "=" in line and line[0] != "#")
    sh(str(DEPLOY_TO / "current" / "venv" / "bin" / "python"), "manage.py", *args,
       cwd=DEPLOY_TO / "current" / "app",
       env={**values, "DJANGO_SETTINGS_MODULE": SETTINGS, "PYTHONDONTWRITEBYTECODE": "1", **(env or {})})


def create_admin() -> str:
    password = secrets.token_urlsafe(12)
    manage("createsuperuser", "--noinput", "--username", ADMIN_USER, "--email", "admin@skinmenu.invalid",
           env={"DJANGO_SUPERUSER_PASSWORD": password})
    LOGIN_FILE.write_text(f"{ADMIN_USER}\n{password}\n")
    LOGIN_FILE.chmod(0o600)
    return password


class BrowserCookiePolicy(http.cookiejar.DefaultCookiePolicy):
    """What browsers do: http://127.0.0.1 and http://localhost are secure contexts, so Secure
    cookies are sent there (Python's default policy sends them over https only)."""

    def return_ok_secure(self, cookie, request):
        host = urllib.parse.urlsplit(request.full_url).hostname
        return host in ("127.0.0.1", "localhost") or super().return_ok_secure(cookie, request)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def admin_login(base: str, username: str, password: str) -> str:
    """Log in like a browser: GET the form, POST it with the CSRF token and an Origin header,
    expect 302 to /admin/, then GET /admin/. Returns the dashboard's title; raises if any step fails."""
    jar = http.cookiejar.CookieJar(policy=BrowserCookiePolicy())
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), NoRedirect)
    form = opener.open(f"{base}/admin/login/", timeout=10).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)
    data = urllib.parse.urlencode({"csrfmiddlewaretoken": token, "username": username,
                                   "password": password, "next": "/admin/"}).encode()
    post = urllib.request.Request(f"{base}/admin/login/", data=data,
                                  headers={"Origin": base, "Referer": f"{base}/admin/login/"})
    try:
        opener.open(post, timeout=10)
        raise RuntimeError("POST /admin/login/ did not redirect (wrong credentials?)")
    except urllib.error.HTTPError as exc:
        if exc.code != 302 or exc.headers["Location"] != "/admin/":
            raise RuntimeError(f"POST /admin/login/ answered {exc.code} {exc.headers.get('Location')}") from None
    dashboard = opener.open(f"{base}/admin/", timeout=10)
    html = dashboard.read().decode()
    title = re.search(r"<title>([^<]*)</title>", html)
    if dashboard.status != 200 or not title or not title.group(1).startswith("Dashboard"):
        raise RuntimeError(f"GET /admin/ answered {dashboard.status} without the dashboard")
    return title.group(1).strip()


def unsaved_work(source: Path) -> list[str]:
    """What deleting `source` (the demo's clone) would lose, one line each: commits that are
    neither the demo's own (its author is GIT_ENV's) nor on the cloned repository's branches,
    and uncommitted changes. Empty when there is no clone."""
    if not (source / ".git").exists():
        return []
    git = ["git", "-C", str(source)]
    log = subprocess.run([*git, "log", "HEAD", "--branches", "--not", "--remotes",
                          "--format=%ae%x09%h %s"], capture_output=True, text=True)
    status = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True)
    if log.returncode != 0 or status.returncode != 0:
        return [f"(git cannot read {source}: {(log.stderr or status.stderr).strip()})"]
    commits = [line.split("\t", 1)[1] for line in log.stdout.splitlines()
               if line.split("\t", 1)[0] != GIT_ENV["GIT_AUTHOR_EMAIL"]]
    return [f"commit {line}" for line in commits] + [f"changed {line}" for line in status.stdout.splitlines()]


def set_aside_unsaved_work(source: Path) -> Path | None:
    """Move the demo's clone out of the way, whole, if it holds work of yours; say so loudly.
    Returns where it went (None: nothing to keep, `source` is left for the demo to delete)."""
    work = unsaved_work(source)
    if not work:
        return None
    kept = source.with_name(f"{source.name}-kept-{time.strftime('%Y%m%d-%H%M%S')}")
    source.rename(kept)
    listed = "\n".join(f"  {line}" for line in work)
    loud(f"demo: {source} holds work a new demo would delete; KEPT it, whole, in {kept}:\n{listed}\n"
         f"Get it back with `git -C {kept} log` / `git fetch {kept} <branch>`; delete {kept} when done.")
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("DEMO_PORT", "8000")))
    parser.add_argument("--stop", action="store_true", help="stop the demo's nginx and gunicorn and exit")
    args = parser.parse_args()

    stop_previous_demo()
    if args.stop:
        print("demo stopped")
        return
    if not port_is_free(args.port):
        sys.exit(f"demo: port {args.port} is in use; run `make demo DEMO_PORT=<free port>` (or DEMO_PORT=… make demo)")
    python = sh(str(REPO / "scripts" / "find-python"), capture=True)
    nginx = find_nginx()
    app_port = 0  # gunicorns listen on unix sockets (standby); kept in the state file for old demos

    banner(f"Fresh scratch deploy root in {DEMO} (the uv cache in it is kept between demos)")
    set_aside_unsaved_work(SOURCE)
    for path in (SOURCE, DEPLOY_TO / "releases", DEPLOY_TO / "current", DEPLOY_TO / "shared",
                 DEPLOY_TO / "state", DEPLOY_TO / "repo", DEPLOY_TO / "run", DEPLOY_TO / "slots",
                 DEPLOY_TO / "live.sock", NGINX_DIR):
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.exists():
            shutil.rmtree(path)
    DEMO.mkdir(exist_ok=True)
    write_config(args.port, app_port, python, front_door=bool(nginx))
    STATE.write_text(json.dumps({"port": args.port, "app_port": app_port, "nginx": bool(nginx)}))

    if nginx:
        banner(f"The front door: an unprivileged nginx on 127.0.0.1:{args.port} "
               f"(/static/ from current/staticfiles/, the rest to {DEPLOY_TO}/live.sock: the live colour's gunicorn)")
        try:
            start_nginx(nginx, NGINX_DIR, f"127.0.0.1:{args.port}", f"unix:{DEPLOY_TO / 'live.sock'}", DEPLOY_TO)
        except RuntimeError as exc:
            sys.exit(f"demo: {exc}")
        print(f"config {NGINX_DIR / 'nginx.conf'} (from scripts/demo-nginx.conf), logs in {NGINX_DIR}")
    else:
        loud("demo: NGINX IS NOT INSTALLED: gunicorn alone serves the demo, so /static/ is NOT served\n"
             "and pages look UNSTYLED (check_static is off). Install it (as root: scripts/install-system-deps,\n"
             "or sudo apt-get install nginx) and run `make demo` again for the production-like site.")
        (DEPLOY_TO / "run").mkdir(parents=True, exist_ok=True)
        subprocess.run(front_door("front", args.port), check=True)

    banner("A scratch clone of this repository, plus a second commit with a visible change")
    sh("git", "clone", "--quiet", "--no-local", str(REPO), str(SOURCE))
    base = (SOURCE / "app" / "templates" / "base.html")
    base.write_text(base.read_text().replace(
        '<footer class="site-footer">Skinmenu</footer>',
        '<footer class="site-footer">Skinmenu · deployed by the demo, second commit</footer>'))
    sh("git", "commit", "--quiet", "-am", "Demo: a visible change in the footer", cwd=SOURCE)
    first = sh("git", "rev-parse", "HEAD~1", cwd=SOURCE, capture=True)
    second = sh("git", "rev-parse", "HEAD", cwd=SOURCE, capture=True)
    print(f"first commit  {first[:12]}  (this repository's HEAD)\nsecond commit {second[:12]}  (footer changed)")

    banner("Build the first commit into releases/<sha>, then make it live")
    deployer("release", first)
    deployer("activate", first)
    banner("Seed a few treatments and create an admin (the live release's manage.py and venv)")
    manage("seed_demo_content")
    password = create_admin()

    banner("Deploy the second commit (release + activate)")
    deployer("deploy", second)
    footer = fetch(args.port, "/")
    print("the live footer says:", footer.split('<footer class="site-footer">')[1].split("</footer>")[0])

    banner("Roll back to the warm standby: two renames, no restart")
    deployer("rollback")

    banner("Releases")
    deployer("list")
    deployer("status")

    url = f"http://127.0.0.1:{args.port}"
    banner("Log into the admin the way a browser does (GET form, POST with CSRF token and Origin)")
    try:
        title = admin_login(url, ADMIN_USER, password)
    except (RuntimeError, OSError, AttributeError) as exc:
        sys.exit(f"demo: the admin login did not work: {exc}")
    print(f"logged in: 302 to /admin/, then GET /admin/ answered 200: \"{title}\"")

    front = "nginx → gunicorn, like production" if nginx else "gunicorn alone: NO nginx, /static/ is not served"
    print(f"\nSkinmenu is serving {first[:12]} at {url}/ ({front})")
    print(f"  admin:    {url}/admin/")
    print(f"  username: {ADMIN_USER}")
    print(f"  password: {password}    (new each run; also in {LOGIN_FILE.relative_to(REPO)})")
    print(f"Try: .venv/bin/deployer --config {CONFIG.relative_to(REPO)} rollback --to {second[:12]}")
    print("Stop it with: make demo-stop")
    if not nginx:
        loud("demo: NO NGINX: the pages above are served UNSTYLED (nothing serves /static/).")


def fetch(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        return resp.read().decode()


if __name__ == "__main__":
    main()
