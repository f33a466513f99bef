"""Page handlers: each checks the login cookie, then renders a shell for its script.

A page without a valid login redirects to /login with the page to come back to. Every
page is sent with a strict Content-Security-Policy: scripts and styles only from the
coordinator itself, no inline script, no framing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from aiohttp import web

from coordinator import __version__
from coordinator import users as accounts
from coordinator.db import Database, User

HERE = Path(__file__).parent
STATIC = HERE / "static"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'none'; form-action 'self'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "same-origin", "Cache-Control": "no-store"}

_env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                          autoescape=True, undefined=jinja2.StrictUndefined)


def _next_target(value: str | None) -> str:
    """Where to go after logging in: a path on this site, never another site."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/locations"


def render(template: str, **context: Any) -> web.Response:
    html = _env.get_template(template).render(version=__version__, **context)
    return web.Response(text=html, content_type="text/html", headers=HEADERS)


def _user_boot(user: User) -> dict[str, Any]:
    perms = sorted(p.value for p in accounts.PERMISSIONS[user.role])
    return {"id": user.id, "username": user.username, "display_name": user.display_name,
            "role": user.role.value, "permissions": perms}


def page_routes(db: Database, cookie: str) -> list[tuple[str, Handler]]:
    """(path, handler) for every page; all GET."""

    async def current_user(request: web.Request) -> User | None:
        token = request.cookies.get(cookie)
        if not token:
            return None
        return await accounts.user_for_token(db, token, datetime.now(UTC))

    def page(template: str, script: str, nav: str, title: str,
             params: Callable[[web.Request], dict[str, str]] | None = None,
             permission: accounts.Permission | None = None) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            user = await current_user(request)
            if user is None:
                raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='/')}")
            if permission is not None and not accounts.may(user.role, permission):
                return render("denied.html", title="Not allowed", nav=nav, script="app",
                              user=_user_boot(user), boot={"user": _user_boot(user)})
            boot: dict[str, Any] = {"user": _user_boot(user)}
            if params is not None:
                boot.update(params(request))
            return render(template, title=title, nav=nav, script=script,
                          user=boot["user"], boot=boot)
        return handler

    async def login_page(request: web.Request) -> web.StreamResponse:
        target = _next_target(request.query.get("next"))
        if await current_user(request) is not None:
            raise web.HTTPSeeOther(target)
        return render("login.html", title="Log in", script="login",
                      boot={"next": target})

    async def root(_: web.Request) -> web.StreamResponse:
        raise web.HTTPSeeOther("/locations")

    def room(request: web.Request) -> dict[str, str]:
        return {"room_id": request.match_info["room_id"]}

    def session(request: web.Request) -> dict[str, str]:
        return {"session_id": request.match_info["session_id"]}

    return [
        ("/", root),
        ("/login", login_page),
        ("/locations", page("locations.html", "locations", "locations", "Locations")),
        ("/locations/{room_id}", page("location.html", "location", "locations", "Location",
                                      room)),
        ("/sessions", page("sessions.html", "sessions", "sessions", "Sessions")),
        ("/sessions/{session_id}", page("session.html", "session", "sessions", "Session",
                                        session)),
        ("/admin", page("admin.html", "admin", "admin", "Administration",
                        permission=accounts.Permission.MANAGE_LOCATIONS)),
    ]
