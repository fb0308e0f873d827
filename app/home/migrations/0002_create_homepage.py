"""Make a HomePage the site root, replacing Wagtail's default "Welcome" page.

wagtailcore's own data migrations create the tree root (path 0001), a plain Page "Welcome to
your new Wagtail site!" at path 00010001 and a default Site pointing at it. A fresh database
must serve the real home page instead, so this replaces that page, in place in the tree, with
a HomePage and points the default Site at it.

Historical models have no treebeard API, so the tree columns are written by hand, the same
way wagtailcore.0002_initial_data does. A database that already has other content at depth 2
(an existing site) is left alone.
"""

import uuid

from django.db import migrations
from django.utils import timezone

HOME_PATH = "00010001"
INTRO = (
    "<p>Facials, peels and skin treatments, with the time they take and what they cost. "
    "Browse the treatment menu or search for what your skin needs.</p>"
)


def create_homepage(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    Page = apps.get_model("wagtailcore", "Page")
    Site = apps.get_model("wagtailcore", "Site")
    Locale = apps.get_model("wagtailcore", "Locale")
    HomePage = apps.get_model("home", "HomePage")

    page_type = ContentType.objects.get(app_label="wagtailcore", model="page")
    homepage_type, _ = ContentType.objects.get_or_create(app_label="home", model="homepage")

    existing = Page.objects.filter(depth=2)
    welcome = existing.filter(content_type=page_type, path=HOME_PATH, slug="home").first()
    if existing.exclude(pk=welcome.pk if welcome else None).exists():
        return  # a real site is already here: not ours to replace
    if HomePage.objects.exists():
        return

    locale = welcome.locale if welcome else Locale.objects.order_by("pk").first()
    site = Site.objects.filter(is_default_site=True).first()
    hostname, port = (site.hostname, site.port) if site else ("localhost", 80)
    if welcome:
        # Cascades to the default Site, which is recreated below.
        welcome.delete()

    now = timezone.now()
    homepage = HomePage.objects.create(
        title="Skinmenu",
        draft_title="Skinmenu",
        slug="home",
        content_type=homepage_type,
        path=HOME_PATH,
        depth=2,
        numchild=0,
        url_path="/home/",
        locale=locale,
        translation_key=uuid.uuid4(),
        live=True,
        first_published_at=now,
        last_published_at=now,
        intro=INTRO,
    )
    Page.objects.filter(depth=1).update(numchild=1)
    Site.objects.create(
        hostname=hostname, port=port, root_page_id=homepage.pk, is_default_site=True
    )


def remove_homepage(apps, schema_editor):
    HomePage = apps.get_model("home", "HomePage")
    # Only the page this migration made, and only while it has no children of its own.
    Page = apps.get_model("wagtailcore", "Page")
    deleted, _ = HomePage.objects.filter(path=HOME_PATH, depth=2, numchild=0).delete()
    if deleted:
        Page.objects.filter(depth=1).update(numchild=Page.objects.filter(depth=2).count())


class Migration(migrations.Migration):
    dependencies = [
        ("home", "0001_initial"),
        # The default Locale and the Welcome page exist by now.
        ("wagtailcore", "0097_baselogentry_uuid_action_timestamp_indexes"),
    ]

    operations = [
        migrations.RunPython(create_homepage, remove_homepage),
    ]
