"""The site's root page."""

from wagtail.admin.panels import FieldPanel
from wagtail.fields import RichTextField
from wagtail.models import Page


class HomePage(Page):
    """The Skinmenu home page: the root of the site (created by migration 0002)."""

    intro = RichTextField(blank=True, help_text="Shown under the title on the home page.")

    content_panels = [*Page.content_panels, FieldPanel("intro")]

    # Root level only: it sits directly under Wagtail's tree root, one per site.
    parent_page_types = ["wagtailcore.Page"]
    subpage_types = ["treatments.TreatmentIndexPage"]

    class Meta:
        verbose_name = "home page"

    def get_context(self, request, *args, **kwargs):
        from treatments.models import TreatmentIndexPage

        context = super().get_context(request, *args, **kwargs)
        context["treatment_indexes"] = TreatmentIndexPage.objects.child_of(self).live()
        return context
