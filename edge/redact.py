"""Keep camera passwords out of logs, API responses and manifests.

Every text that may carry a camera URL or an error from FFmpeg (which quotes the URL it
opened, credentials included) passes through `Redactor.redact` before it is logged,
stored or sent. Userinfo is stripped from anything shaped like a URL, and every known
secret is replaced in its raw and URL-encoded forms.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus, unquote, urlsplit, urlunsplit

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s'\"]*@")
MASK = "***"


def strip_userinfo(url: str) -> str:
    """The URL without user name and password."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._forms: set[str] = set()
        for s in secrets:
            self.add(s)

    def add(self, secret: str) -> None:
        if not secret:
            return
        self._forms.update({secret, quote(secret, safe=""), quote_plus(secret), quote(secret)})

    def redact(self, text: str) -> str:
        text = _USERINFO.sub(lambda m: m.group("scheme") + MASK + "@", text)
        # Longest first, so an encoded form is not half-replaced by a shorter one.
        for form in sorted(self._forms, key=len, reverse=True):
            text = text.replace(form, MASK)
        return text


class RedactingFilter:
    """A logging filter that passes every record's text through a Redactor."""

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._redactor.redact(record.exc_text)
        record.msg = self._redactor.redact(text)
        record.args = None
        return True


def secrets_of_urls(urls: Iterable[str]) -> list[str]:
    """The passwords (and user names) written into URLs."""
    found: list[str] = []
    for url in urls:
        parts = urlsplit(url)
        if parts.password:
            found.append(unquote(parts.password))
    return found
