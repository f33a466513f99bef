"""The coordinator's web page, served by the coordinator itself (labs are often offline).

Server-rendered page shells (Jinja2) carry who is logged in and what the page is about;
small ES modules under static/ talk to the REST API and follow its live events. There is
no build step and nothing is fetched from another site.
"""

from coordinator.web.pages import STATIC, page_routes

__all__ = ["STATIC", "page_routes"]
