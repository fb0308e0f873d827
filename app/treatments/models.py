"""The treatment menu: an index page listing treatment pages."""

from decimal import Decimal

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from wagtail.admin.panels import FieldPanel, MultiFieldPanel
from wagtail.fields import RichTextField
from wagtail.models import Page
from wagtail.search import index


class TreatmentIndexPage(Page):
    """The treatment menu: lists its live treatments in the editors' order."""

    intro = RichTextField(blank=True)

    content_panels = [*Page.content_panels, FieldPanel("intro")]

    parent_page_types = ["home.HomePage"]
    subpage_types = ["treatments.TreatmentPage"]

    class Meta:
        verbose_name = "treatment index page"

    def treatments(self):
        """Live treatments directly under this index (drafts and other pages excluded)."""
        return TreatmentPage.objects.child_of(self).live().select_related("image")

    def get_context(self, request, *args, **kwargs):
        context = super().get_context(request, *args, **kwargs)
        context["treatments"] = self.treatments()
        return context


class TreatmentPage(Page):
    """One treatment on the menu."""

    summary = models.CharField(
        max_length=255, help_text="One or two sentences, shown on the menu and in search."
    )
    duration_minutes = models.PositiveSmallIntegerField(
        "duration (minutes)", validators=[MinValueValidator(5), MaxValueValidator(600)]
    )
    price = models.DecimalField(
        max_digits=8, decimal_places=2, validators=[MinValueValidator(Decimal("0.00"))]
    )
    body = RichTextField(blank=True)
    image = models.ForeignKey(
        "wagtailimages.Image",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    content_panels = [
        *Page.content_panels,
        FieldPanel("summary"),
        MultiFieldPanel(
            [FieldPanel("duration_minutes"), FieldPanel("price")], heading="Booking"
        ),
        FieldPanel("image"),
        FieldPanel("body"),
    ]

    search_fields = [
        *Page.search_fields,
        index.SearchField("summary"),
        index.SearchField("body"),
        index.FilterField("price"),
        index.FilterField("duration_minutes"),
    ]

    parent_page_types = ["treatments.TreatmentIndexPage"]
    subpage_types: list[str] = []

    class Meta:
        verbose_name = "treatment page"
