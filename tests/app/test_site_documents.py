"""Documents and collection privacy, as a visitor and an editor meet them.

nginx refuses /media/documents/ (an `internal` location), so every download goes through
Wagtail's view, /documents/<id>/<filename>. That view is the only thing standing between a
private collection and the public: it must refuse an anonymous visitor, serve a signed-in
one, and serve public documents to everybody, always by streaming the file itself (never by
redirecting to /media/documents/, which nginx would answer with 404).
"""

import shutil
import tempfile

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.test import TestCase, override_settings
from wagtail.documents import get_document_model
from wagtail.models import Collection, CollectionViewRestriction

PRIVATE_TEXT = b"Price list for partners only: peel 40.00\n"
PUBLIC_TEXT = b"Aftercare: no sun for 48 hours.\n"


class DocumentPrivacyTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        Document = get_document_model()
        root = Collection.get_first_root_node()
        cls.private_collection = root.add_child(name="Partners")
        CollectionViewRestriction.objects.create(
            collection=cls.private_collection,
            restriction_type=CollectionViewRestriction.LOGIN,
        )
        cls.private = Document(title="Partner prices", collection=cls.private_collection)
        cls.public = Document(title="Aftercare", collection=root)
        cls.media = tempfile.mkdtemp(prefix="skinmenu-media-")
        with override_settings(MEDIA_ROOT=cls.media):
            cls.private.file.save("partner-prices.txt", ContentFile(PRIVATE_TEXT))
            cls.public.file.save("aftercare.txt", ContentFile(PUBLIC_TEXT))

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(cls.media, ignore_errors=True)

    def setUp(self):
        override = override_settings(MEDIA_ROOT=self.media)
        override.enable()
        self.addCleanup(override.disable)

    def download(self, document):
        response = self.client.get(document.url)
        body = b"".join(response.streaming_content) if response.streaming else response.content
        return response, body

    def test_documents_are_linked_through_wagtails_view_not_media(self):
        self.assertEqual(settings.WAGTAILDOCS_SERVE_METHOD, "serve_view")
        for document in (self.private, self.public):
            self.assertEqual(document.url, f"/documents/{document.id}/{document.filename}")
            self.assertTrue(document.file.name.startswith("documents/"), document.file.name)

    def test_a_private_document_is_not_served_to_an_anonymous_visitor(self):
        response, body = self.download(self.private)
        self.assertEqual(response.status_code, 302)
        self.assertTrue(response["Location"].startswith("/_util/login/?next="), response["Location"])
        self.assertNotIn(PRIVATE_TEXT, body)

    def test_a_private_document_is_served_to_a_signed_in_user(self):
        user = get_user_model().objects.create_user("partner", password="Partner-pass-123")
        self.client.force_login(user)
        response, body = self.download(self.private)
        self.assertEqual(response.status_code, 200)
        self.assertEqual(body, PRIVATE_TEXT)
        # Streamed by the view itself (no redirect to /media/, no X-Accel-Redirect), inert.
        self.assertNotIn("X-Accel-Redirect", response)
        self.assertEqual(response["X-Content-Type-Options"], "nosniff")
        self.assertEqual(response["Content-Security-Policy"], "default-src 'none'")

    def test_a_public_document_is_served_to_everybody(self):
        response, body = self.download(self.public)
        self.assertEqual(response.status_code, 200)
        self.assertEqual(body, PUBLIC_TEXT)

    def test_a_document_url_with_another_file_name_is_refused(self):
        response = self.client.get(f"/documents/{self.public.id}/{self.private.filename}")
        self.assertEqual(response.status_code, 404)
