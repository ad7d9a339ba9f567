"""Keeping the API key out of what the provider shows and stores. Pure: no I/O, no Airflow.

A server, a proxy or a gateway may quote the request back -- its ``Authorization`` header
included -- anywhere in an answer: an error's text, an output field, an event, a dict key,
the request id. The protocol cuts the key out where answers become models and errors, so
every consumer after it (trigger events, XComs, manifests, exceptions, logs, lineage, the
review page) gets clean text, whichever process it runs in and whether or not Airflow's
secret masker knows the key there.
"""

from __future__ import annotations

import functools
import html
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit, urlunsplit

#: What stands where a secret was.
REDACTED = "***"
# A cut-off echo is still a secret: text starting like the key (this many characters) goes too.
_HEAD = 10
_PERCENT_ESCAPE = re.compile(r"%[0-9A-F]{2}")
_URL_CREDENTIALS = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")


@dataclass(frozen=True)
class _Forms:
    texts: tuple[str, ...]
    heads: tuple[str, ...]
    raw_heads: tuple[bytes, ...]
    #: Every character of every form, and the backslash of escapes none of them foresaw.
    chars: frozenset[str]


@functools.lru_cache(maxsize=64)
def _forms(secret: str) -> _Forms:
    # Every form a server or a gateway may echo it in: escaped for JSON, HTML, repr, or a URL.
    percent = {quote(secret, safe=""), quote(secret), quote_plus(secret)}
    texts = {
        secret,
        json.dumps(secret)[1:-1],
        html.escape(secret),
        repr(secret)[1:-1],
        *percent,
        *(_lower_hex(text) for text in percent),
        # HTML numeric character references, as OWASP-style encoders write every non-alphanumeric one
        "".join(char if char.isalnum() else f"&#x{ord(char):x};" for char in secret),
        "".join(char if char.isalnum() else f"&#x{ord(char):X};" for char in secret),
        "".join(char if char.isalnum() else f"&#{ord(char)};" for char in secret),
    }
    heads = tuple({text[:_HEAD] for text in texts})
    chars = frozenset("".join(texts)) | {"\\"}
    return _Forms(tuple(sorted(texts, key=len, reverse=True)), heads, tuple(head.encode() for head in heads), chars)


def without_secret(text: str, secret: str | None) -> str:
    """``text`` without ``secret``: whole, escaped, or cut short (from its start)."""
    if not secret:
        return text
    forms = _forms(secret)
    if not any(head in text for head in forms.heads):
        return text  # every form starts with one of the heads: nothing to cut
    for form in forms.texts:
        text = text.replace(form, REDACTED)
    return _without_heads(text, forms.texts, forms.chars)


def redact(text: str, secret: str | None) -> str:
    """``text`` without ``secret`` (also escaped, or cut short by a cap) and without URL credentials.

    For messages: the provider's own words around what a server said.
    """
    return without_secret(_URL_CREDENTIALS.sub(rf"\1{REDACTED}@", text), secret)


def may_hold(body: bytes, secret: str | None) -> bool:
    """Whether a JSON ``body`` could decode to text holding (the start of) ``secret``.

    Without a backslash (but for escaped slashes) every string a JSON body decodes to is a
    slice of it, so a secret no form of whose start is in the body is in none of its strings.
    A body that is not UTF-8 (JSON may be UTF-16 or UTF-32) is never cleared this way.
    """
    if not secret:
        return False
    if b"\\" in body:
        body = body.replace(b"\\/", b"/")
        if b"\\" in body:
            return True
    if b"\x00" in body[:4]:
        return True
    return any(head in body for head in _forms(secret).raw_heads)


def without_secret_in(value: Any, secret: str | None) -> Any:
    """``value`` (decoded JSON) with ``secret`` cut out of every string in it, dict keys included.

    Deep nesting raises ``RecursionError``, as decoding it did not.
    """
    if not secret:
        return value
    if isinstance(value, str):
        return without_secret(value, secret)
    if isinstance(value, dict):
        return {without_secret(str(key), secret): without_secret_in(item, secret) for key, item in value.items()}
    if isinstance(value, list):
        return [without_secret_in(item, secret) for item in value]
    return value


def url_without_password(url: str) -> str:
    """``url`` without the password it may carry (proxy URLs often do); the user name stays, to tell which."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:{REDACTED}@" + parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=netloc))


def _without_heads(text: str, forms: tuple[str, ...], chars: frozenset[str]) -> str:
    # A capped message or a preview can end inside the key: its start is a secret too. Where a
    # start is found, the longest form that goes on matching there decides how much is cut, and
    # the cut goes on over every character a form of the key is made of: an escape no form
    # foresaw (PHP's "\/", "%2f") must not leave the rest of the key behind.
    heads = {form[:_HEAD] for form in forms}
    start = 0
    while found := [at for head in heads if (at := text.find(head, start)) != -1]:
        start = min(found)
        candidates = [form for form in forms if text.startswith(form[:_HEAD], start)]
        end = max(start + _matching(text, start, form) for form in candidates)
        if not any(text.startswith(form, start) for form in candidates):
            while end < len(text) and text[end] in chars:
                end += 1
        text = text[:start] + REDACTED + text[end:]
        start += len(REDACTED)
    return text


def _lower_hex(text: str) -> str:
    return _PERCENT_ESCAPE.sub(lambda found: found.group().lower(), text)


def _matching(text: str, start: int, form: str) -> int:
    length = 0
    while length < len(form) and start + length < len(text) and text[start + length] == form[length]:
        length += 1
    return length
