"""manage.py seed_demo_content: a treatment menu with a few treatments, for the demo.

Idempotent: does nothing when the home page already has a treatment index. Never run by
migrations or the deployer; real content is made by editors in the Wagtail admin.
"""

from decimal import Decimal

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from treatments.models import TreatmentIndexPage, TreatmentPage

from home.models import HomePage

TREATMENTS = [
    (
        "Hydrating facial",
        "A deep-cleansing facial with hyaluronic serum for dry and tired skin.",
        60,
        "85.00",
        "<p>Double cleanse, gentle exfoliation, a hydrating mask and a facial massage.</p>",
    ),
    (
        "Glycolic peel",
        "A light chemical peel that evens skin tone and softens fine lines.",
        45,
        "95.00",
        "<p>A 20% glycolic acid peel, neutralised and finished with SPF.</p>",
    ),
    (
        "LED light therapy",
        "Red and blue light sessions that calm redness and blemishes.",
        30,
        "40.00",
        "<p>Non-invasive; best as a course of six sessions.</p>",
    ),
]


class Command(BaseCommand):
    help = "Create a demo treatment menu under the home page (idempotent)."

    @transaction.atomic
    def handle(self, *args, **options):
        home = HomePage.objects.first()
        if home is None:
            raise CommandError("no HomePage: run `manage.py migrate` first")
        if TreatmentIndexPage.objects.child_of(home).exists():
            self.stdout.write("demo content already present")
            return
        index = home.add_child(
            instance=TreatmentIndexPage(
                title="Treatments",
                slug="treatments",
                intro="<p>Every treatment, how long it takes and what it costs.</p>",
            )
        )
        index.save_revision().publish()
        for title, summary, minutes, price, body in TREATMENTS:
            treatment = index.add_child(
                instance=TreatmentPage(
                    title=title,
                    summary=summary,
                    duration_minutes=minutes,
                    price=Decimal(price),
                    body=body,
                )
            )
            treatment.save_revision().publish()
        self.stdout.write(f"created {index.url_path} with {len(TREATMENTS)} treatments")
