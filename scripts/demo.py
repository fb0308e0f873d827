#!/usr/bin/env python3
"""`make demo`: a real local deploy of Skinmenu, with no root, no systemd and no nginx.

It clones this repository into .demo/src, adds a second commit with a visible change, and drives
the real `deployer` against a scratch deploy root (.demo/deploy): release + activate of both
commits, then rollback and list. gunicorn serves the live release on 127.0.0.1, restarted by
scripts/local-service (the stand-in for systemd). The site keeps serving when the demo ends;
`make demo-stop` stops it.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / ".demo"
DEPLOY_TO = DEMO / "deploy"
SOURCE = DEMO / "src"
ENV_FILE = DEMO / "skinmenu.env"
CONFIG = DEMO / "releases.yml"
GIT_ENV = {"GIT_AUTHOR_NAME": "Skinmenu Demo", "GIT_AUTHOR_EMAIL": "demo@skinmenu.invalid",
           "GIT_COMMITTER_NAME": "Skinmenu Demo", "GIT_COMMITTER_EMAIL": "demo@skinmenu.invalid"}


def banner(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def sh(*argv, cwd=None, env=None, capture=False) -> str:
    result = subprocess.run(argv, cwd=cwd, env={**os.environ, **GIT_ENV, **(env or {})},
                            text=True, stdout=subprocess.PIPE if capture else None)
    if result.returncode != 0:
        sys.exit(f"demo: `{' '.join(map(str, argv))}` failed with exit code {result.returncode}")
    return (result.stdout or "").strip()


def service(port: int, action: str) -> list[str]:
    return [sys.executable, str(REPO / "scripts" / "local-service"), "--root", str(DEPLOY_TO),
            "--bind", f"127.0.0.1:{port}", "--env-file", str(ENV_FILE), action]


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


def stop_previous_demo() -> None:
    if CONFIG.exists() and (DEPLOY_TO / "run" / "gunicorn.pid").exists():
        port = int(CONFIG.read_text().split("http://127.0.0.1:")[1].split()[0].strip("/"))
        subprocess.run(service(port, "stop"), check=False)


def write_config(port: int, python: str) -> None:
    ENV_FILE.write_text(
        f"DJANGO_SECRET_KEY={secrets.token_urlsafe(50)}\n"
        "DJANGO_ALLOWED_HOSTS=127.0.0.1,localhost\n"
        f"DJANGO_CSRF_TRUSTED_ORIGINS=http://127.0.0.1:{port}\n"
        f"WAGTAILADMIN_BASE_URL=http://127.0.0.1:{port}\n"
        "# plain HTTP: the demo has no nginx in front to terminate TLS\n"
        "DJANGO_SECURE_SSL_REDIRECT=false\n"
    )
    ENV_FILE.chmod(0o600)
    restart = " ".join(service(port, "restart"))
    is_active = " ".join(service(port, "status"))
    CONFIG.write_text(f"""# The demo's deploy configuration: releases.yml with local paths and a local service.
app: skinmenu
repo: src
deploy_to: deploy
python: {python}
keep_releases: 5
django:
  project_dir: app
  settings: config.settings.production
  requirements: app/requirements.txt
env_file: skinmenu.env
required_env: [DJANGO_SECRET_KEY, DJANGO_ALLOWED_HOSTS, DJANGO_CSRF_TRUSTED_ORIGINS, WAGTAILADMIN_BASE_URL]
shared_dirs: [media, db]
service:
  restart: {restart}
  is_active: {is_active}
smoke:
  url: http://127.0.0.1:{port}
  check_static: false   # no nginx here: nothing serves /static/ (the e2e tier checks it)
  timeout: 30
""")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("DEMO_PORT", "8000")))
    parser.add_argument("--stop", action="store_true", help="stop the demo's gunicorn and exit")
    args = parser.parse_args()

    stop_previous_demo()
    if args.stop:
        print("demo stopped")
        return
    if not port_is_free(args.port):
        sys.exit(f"demo: port {args.port} is in use; run `make demo DEMO_PORT=<free port>` (or DEMO_PORT=… make demo)")
    python = sh(str(REPO / "scripts" / "find-python"), capture=True)

    banner(f"Fresh scratch deploy root in {DEMO} (the uv cache in it is kept between demos)")
    for path in (SOURCE, DEPLOY_TO / "releases", DEPLOY_TO / "current", DEPLOY_TO / "shared",
                 DEPLOY_TO / "state", DEPLOY_TO / "repo", DEPLOY_TO / "run"):
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.exists():
            shutil.rmtree(path)
    DEMO.mkdir(exist_ok=True)
    write_config(args.port, python)

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
    env = dict(line.split("=", 1) for line in ENV_FILE.read_text().splitlines() if "=" in line and line[0] != "#")
    sh(str(DEPLOY_TO / "current" / "venv" / "bin" / "python"), "manage.py", "seed_demo_content",
       cwd=DEPLOY_TO / "current" / "app",
       env={**env, "DJANGO_SETTINGS_MODULE": "config.settings.production", "PYTHONDONTWRITEBYTECODE": "1"})

    banner("Deploy the second commit (release + activate)")
    deployer("deploy", second)
    footer = fetch(args.port, "/")
    print("the live footer says:", footer.split('<footer class="site-footer">')[1].split("</footer>")[0])

    banner("Roll back: one relink and one restart")
    deployer("rollback")

    banner("Releases")
    deployer("list")
    deployer("status")
    print(f"\nSkinmenu is serving {first[:12]} at http://127.0.0.1:{args.port}/ "
          f"(admin login: http://127.0.0.1:{args.port}/admin/login/)")
    print(f"Try: .venv/bin/deployer --config {CONFIG.relative_to(REPO)} rollback --to {second[:12]}")
    print("Stop it with: make demo-stop")


def fetch(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        return resp.read().decode()


if __name__ == "__main__":
    main()
