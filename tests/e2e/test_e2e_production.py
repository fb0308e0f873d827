"""The operator's story on the production topology (DESIGN §12, issue 4).

One booted Debian container, set up by docs/server-guide.md (conftest.py `server`); the tests
below run in order and each builds on the previous one, like the life of a real server.
"""

from __future__ import annotations

import pytest

STORY = True
STORY_BROKEN = None


@pytest.fixture(autouse=True)
def _story_so_far():
    if STORY_BROKEN:
        pytest.skip(f"an earlier step of the story failed ({STORY_BROKEN})")


def test_server_is_set_up_by_the_guide(server):
    c = server.c
    assert c.run("systemctl is-active skinmenu.socket").stdout.strip() == "active"
    assert c.run("stat -c '%U:%G %a' /run/skinmenu/skinmenu.sock").stdout.split() == ["root:www-data", "660"]
    c.run("nginx -t")
