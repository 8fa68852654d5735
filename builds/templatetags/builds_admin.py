"""Template tags for the admin index: the CI dashboard (builds per hour by outcome, queues, queue wait)."""
from django import template

from builds.dashboard import ci_dashboard

register = template.Library()


@register.inclusion_tag("admin/ci_dashboard.html")
def ci_dashboard_panel() -> dict:
    """The numbers and the chart of builds/dashboard.py, for the index page."""
    return {"ci": ci_dashboard()}
