"""The Wagtail admin is private: an editor's browser fetches nothing from a third party.

Out of the box Wagtail shows each user's Gravatar (a request to gravatar.com carrying a hash
of the editor's e-mail address, from every admin page) and, for superusers, checks for a
new Wagtail release from the dashboard (a script that asks releases.wagtail.io). Both are
off in base.py, so no page of the admin names either service.
"""

import re
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from home.models import HomePage
from treatments.models import TreatmentIndexPage, TreatmentPage

# What a browser fetches by itself: an image, script, style or frame from another origin.
# (Links the editor may choose to follow, such as the help menu's guide.wagtail.org, are not.)
FETCHED_FROM_ELSEWHERE = re.compile(r'\b(?:src|srcset|data-src)="(?:https?:)?//|<link[^>]+href="(?:https?:)?//')

pytestmark = pytest.mark.django_db


@pytest.fixture
def editor_client(client):
    """A superuser with a real e-mail address, logged in: the case both features act on."""
    editor = get_user_model().objects.create_superuser(
        "editor", "editor@skinmenu.example.com", "a long enough password 42"
    )
    client.force_login(editor)
    return client


@pytest.fixture
def treatment():
    index = HomePage.objects.get().add_child(instance=TreatmentIndexPage(title="Treatments"))
    peel = index.add_child(instance=TreatmentPage(
        title="Glycolic peel", summary="Evens skin tone.", duration_minutes=45, price=Decimal("95.50")))
    peel.save_revision().publish()
    return peel


def admin_pages(treatment):
    return ["/admin/", f"/admin/pages/{treatment.pk}/edit/", "/admin/account/", "/admin/users/"]


def test_no_admin_page_fetches_a_gravatar_or_checks_for_a_wagtail_upgrade(editor_client, treatment):
    for path in admin_pages(treatment):
        response = editor_client.get(path)
        assert response.status_code == 200, path
        html = response.content.decode()
        assert "gravatar" not in html, f"{path} fetches an avatar from gravatar.com"
        assert not FETCHED_FROM_ELSEWHERE.search(html), f"{path} fetches from another origin"
        assert 'data-controller="w-upgrade' not in html, f"{path} has the upgrade check"


def test_the_editor_sees_wagtails_own_default_avatar(editor_client):
    html = editor_client.get("/admin/").content.decode()
    assert "wagtailadmin/images/default-user-avatar" in html


def test_the_settings_say_so(settings):
    assert settings.WAGTAIL_GRAVATAR_PROVIDER_URL is None
    assert settings.WAGTAIL_ENABLE_UPDATE_CHECK is False
