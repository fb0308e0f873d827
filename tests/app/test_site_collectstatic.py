"""collectstatic in a release, with the production settings (ManifestStaticFilesStorage).

The deployer builds <release>/staticfiles once; nginx serves it under /static/ with far-future
caching, so every file a page names must exist under its hashed name, and a changed file must
get a new name.
"""

import json
import re
import textwrap

HASHED = re.compile(r"^(?P<stem>.+)\.(?P<hash>[0-9a-f]{12})\.(?P<ext>[^./]+)$")


def manifest(release):
    path = release / "staticfiles" / "staticfiles.json"
    assert path.is_file(), "collectstatic wrote no staticfiles.json"
    return json.loads(path.read_text())["paths"]


def test_manifest_names_hashed_files_that_exist(built_release):
    paths = manifest(built_release)
    static_root = built_release / "staticfiles"
    missing = [hashed for hashed in paths.values() if not (static_root / hashed).is_file()]
    assert missing == []
    # Wagtail's admin assets are there too (the smoke test's /admin/login/ needs them).
    assert "wagtailadmin/css/core.css" in paths


def test_our_own_css_and_js_are_collected_under_hashed_names(built_release):
    paths = manifest(built_release)
    app_static = built_release / "app" / "static"
    static_root = built_release / "staticfiles"
    for name in ("css/site.css", "js/site.js"):
        hashed = paths[name]
        match = HASHED.match(hashed)
        assert match, f"{name} -> {hashed} is not a hashed name"
        assert match["stem"] == name.rsplit(".", 1)[0]
        assert (static_root / hashed).read_bytes() == (app_static / name).read_bytes()


def test_pages_link_the_hashed_files(python, built_release, prod_env, release_env):
    script = textwrap.dedent(
        """
        import django
        django.setup()
        from django.test import Client
        response = Client(HTTP_HOST="skinmenu.example.com").get("/", HTTP_X_FORWARDED_PROTO="https")
        assert response.status_code == 200, response.status_code
        print(response.content.decode())
        """
    )
    result = python(["-c", script], env=release_env(prod_env), cwd=built_release / "app")
    assert result.returncode == 0, result.stderr
    paths = manifest(built_release)
    assert f'href="/static/{paths["css/site.css"]}"' in result.stdout
    assert f'src="/static/{paths["js/site.js"]}"' in result.stdout


def test_a_changed_stylesheet_gets_a_new_name(manage, release_root, prod_env, built_release):
    css = release_root / "app" / "static" / "css" / "site.css"
    css.write_text(css.read_text() + "\n.changed { color: red; }\n")
    result = manage("collectstatic", "--noinput", env=prod_env, app_dir=release_root / "app")
    assert result.returncode == 0, result.stderr
    # STATIC_ROOT is <release>/staticfiles, whatever the environment says.
    new = manifest(release_root)["css/site.css"]
    assert new != manifest(built_release)["css/site.css"]
    assert (release_root / "staticfiles" / new).read_text().endswith(".changed { color: red; }\n")
