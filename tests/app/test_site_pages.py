"""The Skinmenu content model, as an editor and a visitor meet it.

A fresh database (the test database is built by running every migration) already serves a
real home page; editors can only put pages where they belong; each page type renders, with
and without an image; the treatment menu shows live treatments only; search finds a
treatment by what its summary says.
"""

import re
import shutil
import tempfile
from decimal import Decimal
from io import StringIO
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.test import override_settings
from home.models import HomePage
from treatments.models import TreatmentIndexPage, TreatmentPage
from wagtail.images.models import Image
from wagtail.images.tests.utils import get_test_image_file
from wagtail.models import Page, Site
from wagtail.test.utils import WagtailPageTestCase


def make_treatment(index, title, summary="A treatment.", *, live=True, **fields):
    fields.setdefault("duration_minutes", 45)
    fields.setdefault("price", Decimal("65.00"))
    page = TreatmentPage(title=title, summary=summary, live=live, **fields)
    index.add_child(instance=page)
    if live:
        page.save_revision().publish()
    return page


class FreshDatabaseTests(WagtailPageTestCase):
    def test_the_site_root_is_our_home_page_not_wagtails_welcome_page(self):
        site = Site.objects.get(is_default_site=True)
        root = site.root_page.specific
        self.assertIsInstance(root, HomePage)
        self.assertTrue(root.live)
        # Wagtail's "Welcome to your new Wagtail site!" page is gone, not merely hidden.
        self.assertEqual(Page.objects.filter(depth=2).count(), 1)
        self.assertFalse(Page.objects.filter(title__icontains="welcome").exists())

    def test_the_home_page_is_served_at_the_root_url(self):
        response = self.client.get("/")
        self.assertEqual(response.status_code, 200)
        self.assertTemplateUsed(response, "home/home_page.html")
        self.assertContains(response, "Facials, peels and skin treatments")


class CreationRulesTests(WagtailPageTestCase):
    def test_home_page_lives_at_the_root_only(self):
        self.assertAllowedParentPageTypes(HomePage, {Page})
        self.assertCanCreateAt(Page, HomePage)
        self.assertCanNotCreateAt(HomePage, HomePage)
        self.assertCanNotCreateAt(TreatmentIndexPage, HomePage)

    def test_treatment_index_goes_under_the_home_page_only(self):
        self.assertAllowedParentPageTypes(TreatmentIndexPage, {HomePage})
        self.assertCanCreateAt(HomePage, TreatmentIndexPage)
        self.assertCanNotCreateAt(Page, TreatmentIndexPage)
        self.assertCanNotCreateAt(TreatmentIndexPage, TreatmentIndexPage)

    def test_treatments_go_under_a_treatment_index_only_and_have_no_children(self):
        self.assertAllowedParentPageTypes(TreatmentPage, {TreatmentIndexPage})
        self.assertAllowedSubpageTypes(TreatmentIndexPage, {TreatmentPage})
        self.assertAllowedSubpageTypes(TreatmentPage, set())
        self.assertCanCreateAt(TreatmentIndexPage, TreatmentPage)
        self.assertCanNotCreateAt(HomePage, TreatmentPage)
        self.assertCanNotCreateAt(Page, TreatmentPage)
        self.assertCanNotCreateAt(TreatmentPage, TreatmentPage)


class RenderingTests(WagtailPageTestCase):
    @classmethod
    def setUpTestData(cls):
        cls.home = HomePage.objects.get()
        cls.index = TreatmentIndexPage(
            title="Treatments", slug="treatments", intro="<p>Our full menu.</p>"
        )
        cls.home.add_child(instance=cls.index)
        cls.peel = make_treatment(
            cls.index,
            "Glycolic peel",
            "A light chemical peel that evens skin tone.",
            duration_minutes=45,
            price=Decimal("95.50"),
            body="<p>Finished with <strong>SPF 50</strong>.</p>",
        )
        cls.draft = make_treatment(cls.index, "Secret draft facial", live=False)

    def setUp(self):
        # Images and their renditions are written to a throwaway media root.
        media = tempfile.mkdtemp(prefix="skinmenu-media-")
        self.addCleanup(shutil.rmtree, media, ignore_errors=True)
        override = override_settings(MEDIA_ROOT=media)
        override.enable()
        self.addCleanup(override.disable)

    def test_every_page_type_renders(self):
        self.assertPageIsRenderable(self.home)
        self.assertPageIsRenderable(self.index)
        self.assertPageIsRenderable(self.peel)

    def test_home_page_links_to_the_treatment_menu(self):
        response = self.client.get("/")
        self.assertContains(response, 'href="/treatments/"')

    def test_treatment_without_an_image_renders_its_facts_and_body(self):
        self.assertIsNone(self.peel.image)
        response = self.client.get("/treatments/glycolic-peel/")
        self.assertEqual(response.status_code, 200)
        self.assertTemplateUsed(response, "treatments/treatment_page.html")
        self.assertContains(response, "<h1>Glycolic peel</h1>", html=True)
        self.assertContains(response, "A light chemical peel that evens skin tone.")
        self.assertContains(response, "45 min")
        self.assertContains(response, 'data-price="95.50"')
        self.assertContains(response, "<strong>SPF 50</strong>", html=True)
        self.assertNotContains(response, "<img")

    def test_treatment_with_an_image_renders_a_rendition(self):
        image = Image.objects.create(title="Peel", file=get_test_image_file("peel.png"))
        self.peel.image = image
        self.peel.save_revision().publish()
        response = self.client.get("/treatments/glycolic-peel/")
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "<img")
        self.assertContains(response, 'class="treatment-image"')
        rendition = r'src="/media/(images/peel\.[0-9a-f]+\.fill-960x540\.png)"'
        match = re.search(rendition, response.text)
        self.assertIsNotNone(match, "no fill-960x540 rendition in the page")
        # The rendition was really written to the media root that nginx serves.
        self.assertTrue((Path(settings.MEDIA_ROOT) / match[1]).is_file())

    def test_page_uses_our_css_and_js(self):
        response = self.client.get("/treatments/")
        self.assertContains(response, "/static/css/site.css")
        self.assertContains(response, "/static/js/site.js")

    def test_index_lists_live_treatments_only(self):
        make_treatment(self.index, "LED light therapy", "Calms redness.")
        response = self.client.get("/treatments/")
        self.assertEqual(response.status_code, 200)
        self.assertTemplateUsed(response, "treatments/treatment_index_page.html")
        listed = [page.title for page in response.context["treatments"]]
        self.assertEqual(listed, ["Glycolic peel", "LED light therapy"])
        self.assertContains(response, "Our full menu.")
        self.assertNotContains(response, "Secret draft facial")

    def test_unpublishing_a_treatment_takes_it_off_the_menu(self):
        self.peel.unpublish()
        response = self.client.get("/treatments/")
        self.assertNotContains(response, "Glycolic peel")
        self.assertContains(response, "No treatments yet.")
        self.assertEqual(self.client.get("/treatments/glycolic-peel/").status_code, 404)

    def test_a_draft_treatment_is_not_served(self):
        self.assertEqual(self.draft.slug, "secret-draft-facial")
        self.assertEqual(self.client.get("/treatments/secret-draft-facial/").status_code, 404)


class SearchTests(WagtailPageTestCase):
    @classmethod
    def setUpTestData(cls):
        index = TreatmentIndexPage(title="Treatments", slug="treatments")
        HomePage.objects.get().add_child(instance=index)
        make_treatment(index, "Glycolic peel", "Evens skin tone and softens fine lines.")
        make_treatment(index, "LED light therapy", "Red and blue light calms blemishes.")
        make_treatment(index, "Hidden facial", "Softens everything.", live=False)

    def test_search_finds_a_treatment_by_its_summary(self):
        # "fine lines" is in the summary only, not in the title.
        response = self.client.get("/search/", {"query": "fine lines"})
        self.assertEqual(response.status_code, 200)
        titles = [page.title for page in response.context["search_results"]]
        self.assertEqual(titles, ["Glycolic peel"])
        self.assertContains(response, 'href="/treatments/glycolic-peel/"')

    def test_search_results_are_the_treatment_menus_cards(self):
        # A visitor who searches sees the same cards as on the menu: summary, duration, price.
        found = self.client.get("/search/", {"query": "fine lines"})
        menu = self.client.get("/treatments/")
        for response in (found, menu):
            self.assertTemplateUsed(response, "includes/card.html")
        card = re.search(r'<li class="treatment-card">.*?</li>', found.text, re.S)
        self.assertIsNotNone(card, "no treatment card in the search results")
        self.assertIn(card[0], menu.text)
        self.assertContains(found, '<ul class="treatment-list search-results">')
        self.assertContains(found, '<span class="duration">45 min</span>', html=True)
        self.assertContains(found, 'data-price="65.00"')

    def test_a_page_that_is_not_a_treatment_is_a_card_without_facts(self):
        response = self.client.get("/search/", {"query": "Treatments"})
        cards = re.findall(r'<li class="treatment-card">.*?</li>', response.text, re.S)
        index_card = next(card for card in cards if 'href="/treatments/"' in card)
        self.assertNotIn('class="facts"', index_card)

    def test_search_never_shows_unpublished_pages(self):
        response = self.client.get("/search/", {"query": "softens"})
        titles = [page.title for page in response.context["search_results"]]
        self.assertEqual(titles, ["Glycolic peel"])

    def test_search_without_results_says_so(self):
        response = self.client.get("/search/", {"query": "tattoo removal"})
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "No results found")

    def test_empty_search_shows_the_form(self):
        response = self.client.get("/search/")
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, 'name="query"')
        self.assertNotContains(response, "No results found")


class FaviconTests(WagtailPageTestCase):
    def test_every_page_links_the_sites_favicon(self):
        for path in ("/", "/search/"):
            self.assertContains(self.client.get(path), '<link rel="icon" href="/static/favicon.ico"')

    def test_the_favicon_is_a_real_icon_in_the_static_files(self):
        from PIL import Image as PillowImage

        with PillowImage.open(settings.APP_DIR / "static" / "favicon.ico") as icon:
            self.assertEqual(icon.format, "ICO")
            self.assertIn((32, 32), icon.info["sizes"])


class AdminTests(WagtailPageTestCase):
    def test_wagtail_admin_login_page_answers(self):
        response = self.client.get("/admin/login/")
        self.assertEqual(response.status_code, 200)

    def test_wagtail_admin_requires_login(self):
        response = self.client.get("/admin/")
        self.assertEqual(response.status_code, 302)
        self.assertIn("/admin/login/", response["Location"])

    def test_django_admin_is_at_django_admin(self):
        response = self.client.get("/django-admin/login/")
        self.assertEqual(response.status_code, 200)

    def test_editor_can_edit_a_treatment(self):
        index = TreatmentIndexPage(title="Treatments", slug="treatments")
        HomePage.objects.get().add_child(instance=index)
        peel = make_treatment(index, "Glycolic peel")
        self.assertPageIsEditable(peel)
        self.assertPageIsPreviewable(peel)


class DemoContentTests(WagtailPageTestCase):
    def test_seed_demo_content_builds_a_published_menu_once(self):
        out = StringIO()
        call_command("seed_demo_content", stdout=out)
        call_command("seed_demo_content", stdout=out)
        self.assertIn("already present", out.getvalue())
        index = TreatmentIndexPage.objects.get()
        self.assertEqual(index.get_parent().specific_class, HomePage)
        self.assertEqual(TreatmentPage.objects.live().child_of(index).count(), 3)
        self.assertFalse(TreatmentPage.objects.filter(has_unpublished_changes=True).exists())
        response = self.client.get("/treatments/")
        self.assertContains(response, "Glycolic peel")
