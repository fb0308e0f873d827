"""The operator's story on the production topology (docs/design.md §12, issue 4).

One booted Debian container, set up by running docs/server-guide.md (conftest.py `server`).
The tests run in order and each builds on the previous one, like the life of a real server:
first deploy, a second deploy with a visible change and a migration (under load), rollback
refused because of it, rollback --migrate to the warm standby (under load, a relink only), a
release that cannot boot, a fix, a release whose home page answers 500 (under load: the public
never reaches it), prune. Everything is seen from inside the container through nginx over HTTPS,
with the domain's certificate checked against the test CA (curl --resolve, as the smoke test does).

The server runs the shipped releases.yml: `service.strategy: standby` (docs/design.md §16), two
colours skinmenu@blue and skinmenu@green behind /home/deploy/live.sock.
"""

from __future__ import annotations

import json
import re
import shlex
import time

import pytest

import e2e_machine as m
from e2e_machine import CA_IN_CONTAINER, SHARE, figure

STORY = True  # conftest: a failure here skips the rest of the story
STORY_BROKEN = None

DOMAIN = m.DOMAIN
HASHED = re.compile(r"\.[0-9a-f]{12}\.[A-Za-z0-9]+$")
IMMUTABLE = "public, max-age=31536000, immutable"
VISIBLE_CHANGE = "Now booking online"


@pytest.fixture(autouse=True)
def _story_so_far():
    if STORY_BROKEN:
        pytest.skip(f"an earlier step of the story failed ({STORY_BROKEN})")


def static_urls(html: str) -> list[str]:
    return sorted(set(re.findall(r"""(?:href|src)=["'](/static/[^"'?#]+)""", html)))


COLOURS = ("blue", "green")


def live_colour(server) -> str:
    """The colour nginx reaches: /home/deploy/live.sock -> /run/skinmenu/<colour>.sock."""
    target = server.c.run("readlink /home/deploy/live.sock").stdout.strip()
    assert re.fullmatch(r"/run/skinmenu/(blue|green)\.sock", target), target
    return target.rsplit("/", 1)[-1].removesuffix(".sock")


def other(colour: str) -> str:
    return COLOURS[1] if colour == COLOURS[0] else COLOURS[0]


def colour_pid(server, colour: str) -> int:
    return int(server.c.run(f"systemctl show -p MainPID --value skinmenu@{colour}.service").stdout.strip())


def colour_active(server, colour: str) -> bool:
    return server.c.run(f"systemctl is-active skinmenu@{colour}.service", check=False).stdout.strip() == "active"


def slot_sha(server, colour: str) -> str:
    return server.c.run(f"readlink /home/deploy/slots/{colour}", check=False).stdout.strip().rsplit("/", 1)[-1]


def service_main_pid(server) -> int:
    return colour_pid(server, live_colour(server))


def nginx_log_lines(server) -> int:
    return int(server.c.run("wc -l < /var/log/nginx/access.log").stdout.strip())


def steady_load(server, paths: list[str], label: str, seconds: float = 6) -> dict:
    """The same load with no operation running: the run's own steady p99, to compare against."""
    load = Load(server, paths, label)
    time.sleep(seconds)
    return load.finish()


def latency_ratio(server, operation: str, stats: dict, steady: dict) -> float:
    ratio = stats["worst_ms"] / steady["p99_ms"]
    figure(f"{operation}: worst latency {stats['worst_ms']} ms = {ratio:.1f}x the steady p99 "
           f"({steady['p99_ms']} ms) of this run (issue 10 target <= 3x)")
    server.notes.setdefault("ratios", {})[operation] = ratio
    return ratio


class Load:
    """Requests through nginx over HTTPS, continuously, from inside the container."""

    def __init__(self, server, paths: list[str], label: str, workers: int = 4):
        self.server, self.label = server, label
        self.stop_file, self.ready_file = "/run/e2e-load.stop", "/run/e2e-load.ready"
        server.c.run(f"rm -f {self.stop_file} {self.ready_file}")
        args = " ".join(f"--path {p}" for p in paths)
        self.proc = server.c.popen(
            f"exec python3 {SHARE}/loadclient.py --cacert {CA_IN_CONTAINER} --stop {self.stop_file} "
            f"--ready {self.ready_file} --workers {workers} --max-seconds 600 --max-requests 500000 {args}"
        )
        deadline = time.monotonic() + 30
        while server.c.run(f"test -e {self.ready_file}", check=False).returncode != 0:
            assert self.proc.poll() is None, f"load client died: {self.proc.communicate()}"
            assert time.monotonic() < deadline, "load client never got a first 200"
            time.sleep(0.1)
        time.sleep(1)  # a second of steady state before the operation

    def finish(self) -> dict:
        time.sleep(1)  # and one after it
        self.server.c.run(f"touch {self.stop_file}")
        out, err = self.proc.communicate(timeout=120)
        assert self.proc.returncode == 0, f"load client failed: {err}"
        stats = json.loads(out)
        figure(
            f"{self.label}: {stats['count']} requests in {stats['seconds']}s ({len(stats['by_status'])} "
            f"status kinds {stats['by_status']}), {stats['failed']} failed, worst latency {stats['worst_ms']} ms "
            f"({stats['worst_path']}), p50 {stats['p50_ms']} ms, p99 {stats['p99_ms']} ms"
        )
        return stats


# --- the server as the guide left it --------------------------------------------------------------

def test_server_is_set_up_by_the_guide(server):
    c = server.c
    assert c.run("systemctl is-active skinmenu.socket").stdout.strip() == "active"
    assert c.run("stat -c '%U:%G %a' /run/skinmenu/skinmenu.sock").stdout.split() == ["root:www-data", "660"]
    # The shipped strategy: two colours, each socket held by systemd, none started yet.
    for colour in COLOURS:
        assert c.run(f"systemctl is-active skinmenu@{colour}.socket").stdout.strip() == "active"
        assert c.run(f"stat -c '%U:%G %a' /run/skinmenu/{colour}.sock").stdout.split() == ["deploy:www-data", "660"]
        assert not colour_active(server, colour)
    assert c.run("systemctl is-active skinmenu-standby.timer").stdout.strip() == "active"
    verify = c.run("systemd-analyze verify --man=no skinmenu-standby.timer skinmenu-standby.service "
                   "skinmenu@blue.socket skinmenu@blue.service", check=False)
    assert verify.returncode == 0 and not verify.output.strip(), verify.describe()
    assert c.run("stat -c '%U:%G %a' /home/deploy").stdout.split() == ["deploy:deploy", "711"]
    assert c.run("stat -c '%U:%G %a' /etc/skinmenu/skinmenu.env").stdout.split() == ["root:deploy", "640"]
    nginx_t = c.run("nginx -t")
    figure(f"nginx -t ({c.run('nginx -v').output.strip()}): "
           + " / ".join(line.split("nginx: ", 1)[-1] for line in nginx_t.stderr.strip().splitlines()))
    # The installed files are the repository's, byte for byte.
    for installed, source in [
        ("/etc/systemd/system/skinmenu.service", "systemd/skinmenu.service"),
        ("/etc/systemd/system/skinmenu.socket", "systemd/skinmenu.socket"),
        ("/etc/sudoers.d/skinmenu", "systemd/skinmenu.sudoers"),
        ("/etc/systemd/system/skinmenu@.service", "systemd/skinmenu@.service"),
        ("/etc/systemd/system/skinmenu@.socket", "systemd/skinmenu@.socket"),
        ("/etc/systemd/system/skinmenu-standby.service", "systemd/skinmenu-standby.service"),
        ("/etc/systemd/system/skinmenu-standby.timer", "systemd/skinmenu-standby.timer"),
        ("/etc/sudoers.d/skinmenu-standby", "systemd/skinmenu-standby.sudoers"),
        ("/etc/nginx/sites-enabled/skinmenu", "nginx/skinmenu.conf"),
    ]:
        assert c.read(installed) == (m.REPO / source).read_text(), f"{installed} differs from {source}"


def test_deploy_user_may_only_start_and_stop_the_colours(server):
    """The guide installs both rules (restart, for servers that keep that strategy, and standby):
    deploy may restart skinmenu.service and start/stop the two colours, nothing else."""
    c = server.c
    rules = c.run("sudo -l -U deploy").stdout
    # One "(root) NOPASSWD: a, b, ..." entry per rule; sudo may wrap a long one onto indented lines.
    entries = re.findall(r"\(root\) NOPASSWD:(.*?)(?=\n\s*\(|\Z)", rules, re.S)
    granted = {" ".join(cmd.split()) for entry in entries for cmd in entry.split(",") if cmd.strip()}
    assert granted == {"/usr/bin/systemctl restart skinmenu.service"} | {
        f"/usr/bin/systemctl {verb} skinmenu@{colour}.service" for verb in ("start", "stop") for colour in COLOURS
    }, rules
    for forbidden in ("/usr/bin/systemctl stop skinmenu.service", "/usr/bin/systemctl restart nginx.service",
                      "/usr/bin/systemctl restart skinmenu.service --now", "/bin/sh -c id",
                      "/usr/bin/systemctl restart skinmenu@blue.service", "/usr/bin/systemctl start skinmenu@red.service",
                      "/usr/bin/systemctl stop skinmenu@blue.socket", "/usr/bin/systemctl start skinmenu@blue.service --now",
                      "/usr/bin/systemctl start skinmenu@blue.service skinmenu@green.service"):
        result = c.run(f"sudo -iu deploy sudo -n {forbidden}", check=False)
        assert result.returncode != 0, f"deploy could run `{forbidden}` as root"


def test_systemd_analyze_security_scores_the_colours_at_most_half(server):
    version = server.c.run("systemctl --version").stdout.split()[1]
    for unit, bound in (("skinmenu.service", 2.0), ("skinmenu@blue.service", 0.5), ("skinmenu@green.service", 0.5)):
        out = server.c.run(f"systemd-analyze security --no-pager {unit}").stdout
        score = float(re.search(rf"Overall exposure level for {re.escape(unit)}: (\d+\.\d+)", out).group(1))
        figure(f"systemd-analyze security {unit} (booted container, systemd {version}): {score}")
        assert score <= bound, out


# --- first deploy ----------------------------------------------------------------------------------

def test_first_deploy(server):
    """The guide's 'First deploy' block, verbatim."""
    c = server.c
    block = next(b for b in m.guide_blocks() if b.action == "test" and b.name == "first-deploy")
    for line in block.body.splitlines():
        result = c.run(line, check=False, timeout=900)
        m.log(f"{line}: exit {result.returncode} in {result.seconds:.1f}s")
        assert result.returncode == 0, result.describe()
        if line.endswith("deploy main"):
            figure(f"first deploy (cold uv cache, offline wheelhouse): {result.seconds:.1f}s")
    sha = server.live_sha()
    server.shas["first"] = sha
    health = server.healthz()
    assert health == {"status": "ok", "release": sha, "database": "ok"}

    home = server.https("/")
    assert home.status == 200, home.summary()
    assert "Skinmenu" in home.body
    assert home.headers.get("strict-transport-security", "").startswith("max-age=31536000")
    assets = static_urls(home.body)
    assert assets and all(HASHED.search(url) for url in assets), assets
    for url in assets:
        asset = server.https(url)
        assert asset.status == 200, (url, asset.summary())
        assert asset.headers["cache-control"] == IMMUTABLE, (url, asset.headers)
    server.notes.update(first_home=home.body, first_assets=assets)

    assert server.https("/admin/login/").status == 200
    redirect = server.https("/admin/login/?next=/admin/", http=True)
    assert redirect.status == 301 and redirect.headers["location"] == f"https://{DOMAIN}/admin/login/?next=/admin/"

    # The first colour serves it; gunicorn runs as the service user, from the release its slot
    # named at start. Nothing was live before: there is no standby.
    assert live_colour(server) == "blue" and slot_sha(server, "blue") == sha
    assert not colour_active(server, "green")
    pid = service_main_pid(server)
    assert c.run(f"ps -o user= -p {pid}").stdout.strip() == "skinmenu"
    assert c.run(f"readlink /proc/{pid}/cwd").stdout.strip() == f"/home/deploy/releases/{sha}/app"


def test_nginx_serves_the_site_as_designed(server):
    c = server.c
    # nginx overwrites X-Forwarded-Proto: a client claiming "http" would otherwise get Django's
    # SSL redirect (301) instead of the page.
    spoofed = server.https("/admin/login/", extra="-H 'X-Forwarded-Proto: http' -H 'X-Forwarded-For: 6.6.6.6'")
    assert spoofed.status == 200, spoofed.summary()
    # Unknown host names are dropped, not handed to Django.
    other = c.run("curl -sS -o /dev/null -w '%{http_code}' -H 'Host: evil.example' http://127.0.0.1/", check=False)
    assert other.stdout.strip() in ("000", "") and other.returncode != 0
    tls_other = c.run("curl -sS -o /dev/null -k --resolve evil.example:443:127.0.0.1 https://evil.example/", check=False)
    assert tls_other.returncode != 0  # ssl_reject_handshake
    # TLS 1.2 is accepted (1.3 is the default); dotfiles and directory listings are refused.
    assert server.https("/healthz", extra="--tlsv1.2 --tls-max 1.2").status == 200
    assert server.https("/static/.hidden").status in (403, 404)
    assert server.https("/.env").status == 403
    assert server.https("/media/").status in (403, 404)
    # Media: served as inert files; unknown types are downloads, never rendered or run.
    c.run("install -o skinmenu -g skinmenu -m 0644 /dev/null /home/deploy/shared/media/e2e.html")
    c.run("echo '<script>alert(1)</script>' > /home/deploy/shared/media/e2e.html")
    media = server.https("/media/e2e.html")
    assert media.status == 200
    assert media.headers["content-type"] == "application/octet-stream"
    assert media.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in media.headers["content-security-policy"]
    c.run("rm -f /home/deploy/shared/media/e2e.html")


def test_service_user_cannot_write_into_a_release(server):
    c = server.c
    for path in ("/home/deploy/current/app/x", "/home/deploy/current/venv/x", "/home/deploy/current/staticfiles/x",
                 "/home/deploy/releases/x"):
        result = c.run(f"runuser -u skinmenu -- touch {path}", check=False)
        assert result.returncode != 0 and "Permission denied" in result.stderr, (path, result.describe())
    # …but it can write the shared directories (uploads, the database).
    c.run("runuser -u skinmenu -- touch /home/deploy/shared/media/.e2e && rm /home/deploy/shared/media/.e2e")
    c.run("runuser -u skinmenu -- test -w /home/deploy/shared/db/skinmenu.sqlite3")
    # And the running service sees the releases read-only whatever the modes say.
    pid = service_main_pid(server)
    mounts = c.run(f"cat /proc/{pid}/mountinfo").stdout
    deploy_mount = [line for line in mounts.splitlines() if line.split()[4] == "/home/deploy"][-1]
    assert deploy_mount.split()[5].split(",")[0] == "ro", deploy_mount
    db_mount = [line for line in mounts.splitlines() if line.split()[4] == "/home/deploy/shared/db"][-1]
    assert db_mount.split()[5].split(",")[0] == "rw", db_mount


PNG_1X1 = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


def test_the_service_writes_the_database_and_uploads_through_its_sandbox(server):
    """An editor logs in (a session row written by the service) and uploads an image (a file
    written by the service into shared/media), which nginx then serves from /media/."""
    c = server.c
    # The guide's "first administrator" step, non-interactively.
    server.as_deploy(
        "cd ~/current/app && set -a && . /etc/skinmenu/skinmenu.env && set +a && "
        "DJANGO_SUPERUSER_PASSWORD=e2e-Secret-123 exec ~/current/venv/bin/python manage.py createsuperuser "
        "--noinput --username editor --email editor@skinmenu.invalid --settings=config.settings.production"
    )
    base = f"https://{DOMAIN}"
    curl = (f"curl -sS --max-time 60 --resolve {DOMAIN}:443:127.0.0.1 --cacert {CA_IN_CONTAINER} "
            "-b /run/e2e.jar -c /run/e2e.jar")
    c.run(f"rm -f /run/e2e.jar && {curl} -o /dev/null {base}/admin/login/")
    token = "$(awk '$6 == \"csrftoken\" {print $7}' /run/e2e.jar)"
    login = c.run(
        f"{curl} -o /dev/null -w '%{{http_code}} %{{redirect_url}}' -H 'Referer: {base}/admin/login/' "
        f"--data-urlencode csrfmiddlewaretoken={token} --data-urlencode username=editor "
        f"--data-urlencode password=e2e-Secret-123 {base}/admin/login/"
    ).stdout.split()
    assert login == ["302", f"{base}/admin/"], login
    c.write("/run/e2e-upload.png", __import__("base64").b64decode(PNG_1X1), mode="0644")
    upload = c.run(
        f"{curl} -o /dev/null -w '%{{http_code}} %{{redirect_url}}' -H 'Referer: {base}/admin/images/add/' "
        f"-F csrfmiddlewaretoken={token} -F title=e2e-pixel -F file=@/run/e2e-upload.png {base}/admin/images/add/"
    ).stdout.split()
    assert upload[0] == "302", upload
    stored = c.run("find /home/deploy/shared/media/original_images -name 'e2e-upload*.png' -printf '%u %p\\n'").stdout.split()
    assert stored and stored[0] == "skinmenu", stored
    path = stored[1].removeprefix("/home/deploy/shared")
    image = c.run(f"{curl} -o /dev/null -w '%{{http_code}} %{{content_type}}' {base}{path}").stdout.split()
    assert image == ["200", "image/png"], image
    server.notes.update(editor_curl=curl, editor_token=token)


PRIVATE_TEXT = "e2e: partner price list, signed-in users only"


def _manage_as_deploy(server, code: str) -> str:
    """`manage.py shell -c CODE` of the live release, as the deploy user; its last stdout line."""
    script = ("cd ~/current/app && set -a && . /etc/skinmenu/skinmenu.env && set +a && exec ~/current/venv/bin/python "
              f"manage.py shell --settings=config.settings.production -c {shlex.quote(code)}")
    return server.as_deploy(script).stdout.strip().splitlines()[-1]


def test_a_private_document_downloads_only_through_wagtail_and_media_follows_no_links(server):
    """An editor uploads a document into a collection visible to signed-in users only. Wagtail's
    view serves it to the editor and refuses an anonymous visitor; its file under /media/documents/
    is a 404 for everybody (nginx `internal`); and links the service user plants in shared/media
    (to that document, to its directory, to a system file) are refused (disable_symlinks)."""
    c = server.c
    collection = _manage_as_deploy(server, (
        "from wagtail.models import Collection, CollectionViewRestriction as R; "
        "c = Collection.get_first_root_node().add_child(name='e2e partners'); "
        "R.objects.create(collection=c, restriction_type=R.LOGIN); print(c.id)"
    ))
    base = f"https://{DOMAIN}"
    curl, token = server.notes["editor_curl"], server.notes["editor_token"]
    c.write("/run/e2e-private.txt", PRIVATE_TEXT + "\n", mode="0644")
    upload = c.run(
        f"{curl} -o /dev/null -w '%{{http_code}}' -H 'Referer: {base}/admin/documents/add/' "
        f"-F csrfmiddlewaretoken={token} -F title=e2e-private -F collection={collection} "
        f"-F file=@/run/e2e-private.txt {base}/admin/documents/add/"
    ).stdout
    assert upload == "302", upload
    stored = c.run("find /home/deploy/shared/media/documents -name 'e2e-private*.txt' -printf '%u %f\\n'").stdout.split()
    assert len(stored) == 2 and stored[0] == "skinmenu", stored
    name = stored[1]
    doc_id = c.run(
        "python3 -c \"import sqlite3; c = sqlite3.connect('file:/home/deploy/shared/db/skinmenu.sqlite3?mode=ro', uri=True);"
        " print(c.execute(\\\"select id from wagtaildocs_document where title = 'e2e-private'\\\").fetchone()[0])\""
    ).stdout.strip()
    view = f"/documents/{doc_id}/{name}"

    editor = c.run(f"{curl} -w '\\n%{{http_code}}' {base}{view}").stdout.rsplit("\n", 1)
    assert editor == [PRIVATE_TEXT + "\n", "200"], editor
    anonymous = server.https(view)
    assert anonymous.status == 302 and anonymous.headers["location"].startswith("/_util/login/"), anonymous.summary()
    assert PRIVATE_TEXT not in anonymous.body
    for path in (f"/media/documents/{name}", "/media/documents/", f"/media//documents/{name}",
                 f"/media/%64ocuments/{name}"):
        direct = server.https(path)
        assert direct.status == 404 and PRIVATE_TEXT not in direct.body, (path, direct.summary())
    direct = c.run(f"{curl} -o /dev/null -w '%{{http_code}}' {base}/media/documents/{name}").stdout
    assert direct == "404", direct  # signed in or not: nginx never serves the file itself

    media = "/home/deploy/shared/media"
    c.run(f"runuser -u skinmenu -- sh -c 'echo plain > {media}/e2e-plain.txt && ln -s documents/{name} {media}/e2e-leak.txt"
          f" && ln -s documents {media}/e2e-docs && ln -s /etc/passwd {media}/e2e-passwd.txt'")
    try:
        assert server.https("/media/e2e-plain.txt").status == 200  # a regular file next to the links
        for path in ("/media/e2e-leak.txt", f"/media/e2e-docs/{name}", "/media/e2e-passwd.txt"):
            planted = server.https(path)
            assert planted.status in (403, 404), (path, planted.summary())
            assert PRIVATE_TEXT not in planted.body and "root:" not in planted.body, (path, planted.summary())
    finally:
        c.run(f"rm -f {media}/e2e-plain.txt {media}/e2e-leak.txt {media}/e2e-docs {media}/e2e-passwd.txt")
    figure(f"private document: view 200 signed in / {anonymous.status} anonymous; /media/documents/ 404; "
           "planted symlinks 403")


# --- a second deploy: visible change, new static file, new migration, under load --------------------

def _migration_commit(server) -> str:
    models = server.dev_read("app/treatments/models.py")
    anchor = "    body = RichTextField(blank=True)\n"
    assert anchor in models
    models = models.replace(anchor, anchor + "    booking_note = models.CharField(max_length=200, blank=True, null=True)\n")
    leaves = sorted(
        line for line in server.c.run(f"ls /home/deploy/dev/skinmenu/app/treatments/migrations").stdout.split()
        if re.match(r"\d{4}_.*\.py$", line)
    )
    leaf = leaves[-1].removesuffix(".py")
    number = int(leaf[:4]) + 1
    name = f"{number:04d}_treatmentpage_booking_note"
    migration = (
        "from django.db import migrations, models\n\n\n"
        "class Migration(migrations.Migration):\n"
        f"    dependencies = [(\"treatments\", \"{leaf}\")]\n\n"
        "    operations = [\n"
        "        migrations.AddField(\n"
        "            model_name=\"treatmentpage\",\n"
        "            name=\"booking_note\",\n"
        "            field=models.CharField(blank=True, max_length=200, null=True),\n"
        "        ),\n"
        "    ]\n"
    )
    template = server.dev_read("app/templates/home/home_page.html")
    anchor = "    <h1>{{ page.title }}</h1>\n"
    assert anchor in template
    template = template.replace(anchor, anchor + f"    <p class=\"tagline\">{VISIBLE_CHANGE}</p>\n")
    css = server.dev_read("app/static/css/site.css") + "\n.tagline { font-weight: 600; }\n"
    server.notes["migration"] = f"treatments.{name}"
    return server.commit_and_push(
        "Home page tagline; treatments get a booking note",
        {
            "app/treatments/models.py": models,
            f"app/treatments/migrations/{name}.py": migration,
            "app/templates/home/home_page.html": template,
            "app/static/css/site.css": css,
        },
    )


def test_second_deploy_with_a_visible_change_and_a_migration_under_load(server):
    sha = _migration_commit(server)
    server.shas["second"] = sha
    old_assets = server.notes["first_assets"]

    built = server.deployer("release main")
    assert built.returncode == 0, built.describe()
    assert built.stdout.strip().splitlines()[-1] == sha
    figure(f"release of the second commit (venv reused): {built.seconds:.1f}s")

    paths = ["/", "/healthz", old_assets[0]]
    old, new = live_colour(server), other(live_colour(server))
    old_pid = colour_pid(server, old)
    steady = steady_load(server, paths, "steady load before `deployer activate` (no operation)")
    load = Load(server, paths, "load during `deployer activate` (with a migration)")
    activated = server.deployer(f"activate {sha[:12]}")
    stats = load.finish()
    assert activated.returncode == 0, activated.describe()
    assert stats["failed"] == 0, stats["errors"]
    assert stats["count"] > 0
    assert set(stats["releases"]) <= {server.shas["first"], sha}, stats["releases"]
    latency_ratio(server, "activate (standby) under load", stats, steady)
    figure(f"activate of the second commit (standby, a migration): {activated.seconds:.1f}s")

    # The idle colour started from the new release and passed its smoke test on its own socket
    # before nginx's link moved; the old one keeps running as the warm standby.
    out = activated.stdout + activated.stderr
    for step in (f"start {new} from {sha[:12]}", f"smoke test {new} socket", f"switch current and socket to {new}",
                 "warm standby"):
        assert step in out, (step, out)
    assert live_colour(server) == new and slot_sha(server, new) == sha
    assert colour_active(server, old) and colour_pid(server, old) == old_pid
    server.notes["standby_pid"] = old_pid

    assert server.healthz()["release"] == sha
    home = server.https("/")
    assert VISIBLE_CHANGE in home.body
    new_assets = static_urls(home.body)
    new_css = [u for u in new_assets if "/css/site." in u]
    assert new_css and new_css[0] not in old_assets, (new_assets, old_assets)
    css = server.https(new_css[0])
    assert css.status == 200 and ".tagline" in css.body
    assert css.headers["cache-control"] == IMMUTABLE


def test_a_page_of_the_old_release_still_finds_its_assets(server):
    """Pages rendered before the switch reference the old hashed names: still 200, same bytes."""
    for url in server.notes["first_assets"]:
        response = server.https(url)
        assert response.status == 200, (url, response.summary())
        assert response.headers["cache-control"] == IMMUTABLE


# --- rollback ---------------------------------------------------------------------------------------

def test_rollback_is_refused_because_of_the_migration(server):
    result = server.deployer("rollback")
    assert result.returncode == 1, result.describe()
    assert server.notes["migration"] in result.stderr, result.stderr
    assert "--migrate" in result.stderr
    assert server.live_sha() == server.shas["second"]
    assert server.healthz()["release"] == server.shas["second"]


def test_rollback_with_migrate_to_the_warm_standby_is_a_relink_under_load(server):
    """Inside the standby window the first release still runs in the old colour: the rollback
    unapplies the migration and renames the links; no unit starts."""
    paths = ["/", "/healthz", server.notes["first_assets"][0]]
    standby_colour = other(live_colour(server))
    assert slot_sha(server, standby_colour) == server.shas["first"]
    started_before = server.c.run(f"systemctl show -p ActiveEnterTimestampMonotonic --value "
                                  f"skinmenu@{standby_colour}.service").stdout.strip()
    steady = steady_load(server, paths, "steady load before `deployer rollback --migrate` (no operation)")
    load = Load(server, paths, "load during `deployer rollback --migrate` (to the warm standby)")
    result = server.deployer("rollback --migrate")
    stats = load.finish()
    assert result.returncode == 0, result.describe()
    assert stats["failed"] == 0, stats["errors"]
    latency_ratio(server, "rollback --migrate (to the warm standby) under load", stats, steady)
    figure(f"rollback --migrate to the warm standby: {result.seconds:.1f}s (command, incl. unapply + smoke test)")
    # A relink only: the standby's process is the one that served before, never (re)started.
    assert f"{standby_colour} already runs {server.shas['first'][:12]}" in result.stdout + result.stderr, result.describe()
    assert "warm standby: no start" in result.stdout + result.stderr
    assert live_colour(server) == standby_colour
    assert colour_pid(server, standby_colour) == server.notes["standby_pid"]
    assert server.c.run(f"systemctl show -p ActiveEnterTimestampMonotonic --value "
                        f"skinmenu@{standby_colour}.service").stdout.strip() == started_before
    assert server.healthz()["release"] == server.shas["first"]
    assert VISIBLE_CHANGE not in server.https("/").body
    columns = server.c.run(
        "python3 -c \"import sqlite3; c = sqlite3.connect('file:/home/deploy/shared/db/skinmenu.sqlite3?mode=ro', uri=True);"
        " print([r[1] for r in c.execute('pragma table_info(treatments_treatmentpage)')])\""
    ).stdout
    assert "booking_note" not in columns and "summary" in columns, columns


def test_database_backups_are_private(server):
    """The migration and the rollback --migrate each left a full copy of the database (password
    hashes, sessions): readable by the deploy user only."""
    c = server.c
    for directory in ("/home/deploy/state", "/home/deploy/state/backups"):
        assert c.run(f"stat -c '%U:%G %a' {directory}").stdout.split() == ["deploy:deploy", "700"], directory
    backups = c.run("find /home/deploy/state/backups -type f -printf '%u:%g %m %f\\n'").stdout.strip().splitlines()
    assert len(backups) >= 2, backups
    assert all(line.split()[:2] == ["deploy:deploy", "600"] for line in backups), backups
    first = backups[0].split()[2]
    for user in ("skinmenu", "www-data"):
        result = c.run(f"runuser -u {user} -- cat /home/deploy/state/backups/{first}", check=False)
        assert result.returncode != 0 and "Permission denied" in result.stderr, (user, result.describe())


# --- a release that cannot boot ---------------------------------------------------------------------

def test_a_release_that_cannot_boot_is_refused(server):
    """Passes the build (manage.py never imports config.wsgi) but gunicorn cannot load it: the
    idle colour's start fails (Type=notify + preload) before any link moves; the site keeps
    serving from the live colour, which was never touched."""
    live = live_colour(server)
    idle, live_pid = other(live), colour_pid(server, live)
    wsgi = server.dev_read("app/config/wsgi.py")
    sha = server.commit_and_push(
        "Broken: the WSGI module raises on import",
        {"app/config/wsgi.py": wsgi + "\nraise RuntimeError(\"e2e: this release cannot boot\")\n"},
    )
    server.shas["broken"] = sha
    result = server.deployer("deploy main")
    assert result.returncode == 1, result.describe()
    assert "deployer: error:" in result.stderr
    assert server.live_sha() == server.shas["first"]
    assert server.healthz()["release"] == server.shas["first"]
    assert server.https("/").status == 200
    assert live_colour(server) == live and colour_pid(server, live) == live_pid
    assert not colour_active(server, idle)
    journal = server.c.run(f"journalctl -u skinmenu@{idle}.service --no-pager -n 200").stdout
    assert "e2e: this release cannot boot" in journal
    server.notes["broken_stderr"] = result.stderr.strip().splitlines()[-1]
    figure(f"unbootable release refused (exit 1): {server.notes['broken_stderr']}")


def test_the_fix_deploys(server):
    wsgi = server.dev_read("app/config/wsgi.py")
    fixed = wsgi.replace("\nraise RuntimeError(\"e2e: this release cannot boot\")\n", "")
    sha = server.commit_and_push("Fix the WSGI module", {"app/config/wsgi.py": fixed})
    server.shas["fixed"] = sha
    built = server.deployer("release main")
    assert built.returncode == 0, built.describe()
    # An activate without a migration: only the colour's start and the two smoke tests.
    paths = ["/", "/healthz", server.notes["first_assets"][0]]
    steady = steady_load(server, paths, "steady load before `deployer activate` of the fix (no operation)")
    load = Load(server, paths, "load during `deployer activate` of the fix (no migration)")
    result = server.deployer(f"activate {sha[:12]}")
    stats = load.finish()
    assert result.returncode == 0, result.describe()
    assert stats["failed"] == 0, stats["errors"]
    latency_ratio(server, "activate (standby, no migration) under load", stats, steady)
    assert server.healthz()["release"] == sha
    assert VISIBLE_CHANGE in server.https("/").body


# --- a release that boots but whose home page fails -------------------------------------------------

def test_a_release_whose_home_page_answers_500_never_gets_a_public_request(server):
    """It boots, /admin/login/ and /healthz answer, but `/` (smoke.paths) answers 500: it fails
    its smoke test on the idle colour's own socket, under load. nginx never sends it a request:
    no public 500, no /healthz answer naming it, and the live colour is untouched (exit 1)."""
    c = server.c
    template = server.dev_read("app/templates/home/home_page.html")
    anchor = "    <h1>{{ page.title }}</h1>\n"
    assert anchor in template
    broken = template.replace(anchor, anchor + "    {% url 'e2e-no-such-route' %}\n")
    sha = server.commit_and_push("Broken: the home page reverses a URL that does not exist",
                                 {"app/templates/home/home_page.html": broken})
    server.shas["home500"] = sha
    live = live_colour(server)
    idle, live_pid, live_sha = other(live), colour_pid(server, live), server.live_sha()
    built = server.deployer("release main")
    assert built.returncode == 0, built.describe()

    log_before = nginx_log_lines(server)
    load = Load(server, ["/", "/healthz"], "load during `deployer activate` of a release whose / answers 500")
    result = server.deployer(f"activate {sha[:12]}")
    stats = load.finish()
    public = c.run(f"tail -n +{log_before + 1} /var/log/nginx/access.log").stdout.splitlines()

    assert result.returncode == 1, result.describe()
    errors = [line for line in result.stderr.splitlines() if line.startswith("deployer: error:")]
    assert len(errors) == 1 and "answered 500" in errors[0], result.stderr
    assert stats["failed"] == 0, stats["errors"]
    assert sha not in stats["releases"] and set(stats["releases"]) == {live_sha}, stats["releases"]
    served_500 = [line for line in public if re.search(r'" 5\d\d ', line)]
    assert public and not served_500, served_500[:5]
    # Nothing live changed: the same release, colour and process serve, the idle colour is stopped.
    assert server.live_sha() == live_sha and live_colour(server) == live
    assert colour_pid(server, live) == live_pid
    assert not colour_active(server, idle)
    assert server.healthz()["release"] == live_sha
    last = json.loads(c.run("tail -n 1 /home/deploy/state/history.jsonl").stdout)
    assert (last["to"], last["result"]) == (sha, "failed-smoke"), last
    figure(f"release whose / answers 500 (activate exit 1 in {result.seconds:.1f}s): {stats['count']} public "
           f"requests during it, {len(public)} in nginx's access log, {len(served_500)} answered 5xx, "
           f"0 served by it; {errors[0]}")


# --- prune ------------------------------------------------------------------------------------------

def test_prune_keep_2(server):
    c = server.c
    listing = server.deployer("list --json")
    assert listing.returncode == 0, listing.describe()
    before = set(c.run("ls /home/deploy/releases").stdout.split())
    assert set(server.shas.values()) <= before, (server.shas, before)
    result = server.deployer("prune --keep 2")
    assert result.returncode == 0, result.describe()
    after = set(c.run("ls /home/deploy/releases").stdout.split())
    # Kept: the two newest good builds (fixed = current, second), and the rollback target (first,
    # live before fixed). A release that failed its smoke test does not take one of the places.
    expected = {server.shas["fixed"], server.shas["second"], server.shas["first"]}
    assert after == expected, (result.describe(), after, server.shas)
    assert f"removing {server.shas['broken'][:12]}" in result.stderr
    assert f"removing {server.shas['home500'][:12]}" in result.stderr
    assert server.healthz()["release"] == server.shas["fixed"]
    figure(f"prune --keep 2: {len(before)} -> {len(after)} releases: {result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr.strip().splitlines()[-1]}")
