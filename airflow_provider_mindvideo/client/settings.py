"""A MindVideo connection's settings, read and validated: base URL, API key, extras, proxy, TLS trust.

Whatever a connection can get wrong is found here, when it is read, and reported as a
permanent :class:`MindVideoError` that names the field and the problem -- never as a raw
``TypeError`` deep in a request, an HTTP library's header error quoting the key, or a
"could not reach" that Airflow retries for nothing. The sync and async clients are both built
from :class:`ClientSettings`, so a worker and the triggerer send through the same proxy and
trust the same certificates.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import logging
import math
import os
import ssl
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import urlsplit

import httpx
import pydantic
from pydantic import BeforeValidator, Field

from airflow_provider_mindvideo import DEFAULT_BASE_URL, __version__, installed_airflow_version
from airflow_provider_mindvideo.client.errors import AuthenticationError, InputValidationError, InsecureConnectionError
from airflow_provider_mindvideo.client.redaction import url_without_password

DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_RETRIES = 5

_log = logging.getLogger(__name__)

# What each setting must be, in the words every error about it uses.
EXPECTED: dict[str, str] = {
    "timeout": "a number of seconds > 0",
    "max_retries": "a whole number >= 0",
    "max_concurrency": "a whole number >= 1",
    "max_requests_per_second": "a number > 0",
    "allow_insecure_http": "true or false",
    "proxy": "an http:// or https:// proxy URL",
    "ca_bundle": "the path of a PEM file (or a folder) of CA certificates",
}


@dataclass(frozen=True)
class ClientSettings:
    """Everything needed to talk to one MindVideo account, read from an Airflow connection.

    Hashable: it keys the per-process request limits and the triggers' shared clients.

    :param proxy: Send every request through this proxy; None: the environment's
        ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY``, unless ``NO_PROXY`` covers the host.
    :param ca_bundle: Trust only the CA certificates in this PEM file or folder (a private CA,
        a TLS-inspecting corporate proxy); None: certifi's, or ``SSL_CERT_FILE``/``SSL_CERT_DIR``.
    """

    base_url: str
    api_key: str = field(repr=False)
    timeout: float = DEFAULT_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES
    allow_insecure_http: bool = False
    max_concurrency: int | None = None
    max_requests_per_second: float | None = None
    # A proxy URL may carry a password.
    proxy: str | None = field(default=None, repr=False)
    ca_bundle: str | None = None

    def __post_init__(self) -> None:
        _check_base_url(self.base_url, self.allow_insecure_http)
        check_api_key(self.api_key)
        _check_number("timeout", self.timeout, minimum=0.0, inclusive=False)
        _check_number("max_retries", self.max_retries, minimum=0, whole=True)
        if self.max_concurrency is not None:
            _check_number("max_concurrency", self.max_concurrency, minimum=1, whole=True)
        if self.max_requests_per_second is not None:
            _check_number("max_requests_per_second", self.max_requests_per_second, minimum=0.0, inclusive=False)
        if self.proxy is not None:
            _check_proxy_url("the connection's extra proxy", self.proxy)
        if self.ca_bundle is not None and (not isinstance(self.ca_bundle, str) or not self.ca_bundle.strip()):
            raise InputValidationError(
                f"MindVideo setting ca_bundle = {self.ca_bundle!r}: must be {EXPECTED['ca_bundle']}"
            )

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments shared by ``httpx.Client`` and ``httpx.AsyncClient`` (the transport aside)."""
        return {
            "base_url": self.base_url,
            "headers": {
                "Authorization": f"Bearer {self.api_key}",
                "User-Agent": user_agent(),
                "Accept": "application/json",
            },
            "timeout": httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
            # Output links are public; API calls never redirect. Not following keeps the
            # Authorization header from ever reaching another host.
            "follow_redirects": False,
            # The proxy and the trusted CAs are decided here (transport_options), once, for the
            # worker and the triggerer alike; httpx must not decide again from the environment.
            "trust_env": False,
        }

    def transport_options(self) -> dict[str, Any]:
        """Keyword arguments for ``httpx.HTTPTransport`` and ``httpx.AsyncHTTPTransport``: proxy and TLS trust."""
        return {"proxy": self.proxy_url(), "verify": self.tls_context()}

    def proxy_url(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The proxy to send through, or None to connect directly.

        The connection's ``proxy`` extra wins; else the environment's proxy for the base URL's
        scheme (as curl, requests and httpx read it), unless ``NO_PROXY`` covers the host.
        """
        if self.proxy:
            return self.proxy
        return environment_proxy(self.base_url, os.environ if environ is None else environ)

    def tls_context(self) -> ssl.SSLContext:
        """The certificates to trust: the ``ca_bundle`` extra's, else certifi's (or ``SSL_CERT_FILE``/``_DIR``)."""
        if self.ca_bundle is None:
            return httpx.create_ssl_context(trust_env=True)
        try:
            if os.path.isdir(self.ca_bundle):
                return ssl.create_default_context(capath=self.ca_bundle)
            return ssl.create_default_context(cafile=self.ca_bundle)
        except (OSError, ssl.SSLError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise InputValidationError(
                f"MindVideo connection extra ca_bundle = {self.ca_bundle!r}: cannot load CA certificates "
                f"from it ({reason}); it must be {EXPECTED['ca_bundle']}"
            ) from None


# -- reading a connection -----------------------------------------------------------------------


def _blank_is_default(value: Any) -> Any:
    # The connection form saves an emptied field as null or ""; both mean "the default".
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


def _not_a_flag(value: Any) -> Any:
    # pydantic would read true as 1: a tick box is not a count.
    value = _blank_is_default(value)
    if isinstance(value, bool):
        raise ValueError("a true/false value is not a number")
    return value


_Number = BeforeValidator(_not_a_flag)
_Text = BeforeValidator(_blank_is_default)
_Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class ConnectionExtras(pydantic.BaseModel):
    """The connection's extras as the form (or a JSON/URI connection) gives them: numbers may be strings."""

    model_config = pydantic.ConfigDict(extra="allow", frozen=True)

    timeout: Annotated[_Positive | None, _Number] = None
    max_retries: Annotated[Annotated[int, Field(ge=0)] | None, _Number] = None
    max_concurrency: Annotated[Annotated[int, Field(ge=1)] | None, _Number] = None
    max_requests_per_second: Annotated[_Positive | None, _Number] = None
    allow_insecure_http: Annotated[bool | None, _Text] = None
    proxy: Annotated[str | None, _Text] = None
    ca_bundle: Annotated[str | None, _Text] = None
    # The spend ledger's budgets (read and checked by spend.budgets, not by the client).
    budgets: Any = None
    budget_timezone: Any = None


def settings_from_connection(
    conn: Any,
    *,
    timeout: float | None = None,
    max_retries: int | None = None,
    log: logging.Logger | Any = None,
) -> ClientSettings:
    """Read a ``mindvideo`` connection: host = base URL, password = API key, extras = tuning.

    :param timeout: Overrides the ``timeout`` extra (a hook's own parameter).
    :param max_retries: Overrides the ``max_retries`` extra.
    :param log: Where to warn about extras this provider does not know.
    """
    conn_id = getattr(conn, "conn_id", None)
    extras = read_extras(conn.extra_dejson, conn_id)
    unknown = sorted(extras.model_extra or {})
    if unknown:
        (log or _log).warning(
            "MindVideo connection %r has extras this provider does not use, ignored: %s",
            conn_id,
            ", ".join(_with_suggestion(name) for name in unknown),
        )
    host = (conn.host or "").strip() or DEFAULT_BASE_URL
    if "://" not in host:
        host = f"https://{host}" + (f":{conn.port}" if conn.port else "")
        # Said at once: a plain-http server (the emulator, a local proxy) then fails with an SSL error.
        (log or _log).warning(
            "MindVideo connection %r: host %r has no scheme, so %s is assumed; write http:// for a plain-HTTP server",
            conn_id,
            conn.host,
            host,
        )
    return ClientSettings(
        base_url=host.rstrip("/"),
        api_key=(conn.password or "").strip(),
        timeout=_first_set(timeout, extras.timeout, DEFAULT_TIMEOUT),
        max_retries=_first_set(max_retries, extras.max_retries, DEFAULT_MAX_RETRIES),
        allow_insecure_http=bool(extras.allow_insecure_http),
        max_concurrency=extras.max_concurrency,
        max_requests_per_second=extras.max_requests_per_second,
        proxy=extras.proxy,
        ca_bundle=extras.ca_bundle,
    )


def _with_suggestion(name: str) -> str:
    """An unknown extra, with the known one it most likely misspells (``max_retry`` -> ``max_retries``)."""
    close = difflib.get_close_matches(name, ConnectionExtras.model_fields, n=1, cutoff=0.6)
    return f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name)


def read_extras(extra: Any, conn_id: str | None = None) -> ConnectionExtras:
    """The connection's extras, checked; every problem is named in one error."""
    where = f"MindVideo connection {conn_id!r}" if conn_id else "MindVideo connection"
    if extra is None or extra == "":
        extra = {}
    if not isinstance(extra, Mapping):
        raise InputValidationError(f"{where}: its extra must be a JSON object, not {type(extra).__name__}")
    try:
        return ConnectionExtras.model_validate(dict(extra))
    except pydantic.ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = str(error["loc"][0])
            value = (
                url_without_password(extra[name]) if name == "proxy" and isinstance(extra[name], str) else extra[name]
            )
            problems.append(f"extra {name} = {_shown(value)} must be {EXPECTED[name]} (or empty for the default)")
        raise InputValidationError(f"{where}: " + "; ".join(problems)) from None


def _first_set(*values: Any) -> Any:
    return next(value for value in values if value is not None)


def _shown(value: Any) -> str:
    # As the user typed it in the JSON extra: true, not True.
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


# -- checks ---------------------------------------------------------------------------------


def check_api_key(api_key: Any) -> None:
    """Refuse a missing key, or one with a character no HTTP header may carry (naming where, never the key).

    A key pasted with a line break, a NUL or a zero-width space would otherwise fail inside the
    HTTP library, with an error that quotes the whole header, key included.
    """
    if not api_key:
        raise AuthenticationError("The MindVideo connection has no API key (put it in the password field)")
    if not isinstance(api_key, str):
        raise AuthenticationError(f"The MindVideo API key must be text, not {type(api_key).__name__}")
    found = invisible_character(api_key)
    if found is not None:
        position, what = found
        raise AuthenticationError(
            f"The MindVideo API key contains {what} at character {position}: an API key is visible ASCII "
            "characters only. Paste it into the connection's password field again, without it."
        )


def invisible_character(text: str) -> tuple[int, str] | None:
    """The first character of ``text`` outside visible ASCII (0x21-0x7E): its 1-based position and a description."""
    for position, char in enumerate(text, 1):
        if not "\x21" <= char <= "\x7e":
            return position, describe_character(char)
    return None


_CHARACTER_NAMES = {
    "\n": "a line break (LF)",
    "\r": "a line break (CR)",
    "\x00": "a NUL character",
    "\t": "a tab",
    " ": "a space",
    "\x7f": "a DEL character",
}


def describe_character(char: str) -> str:
    """A character's name in an error message: "a line break (LF)", "U+200B ZERO WIDTH SPACE"."""
    if char in _CHARACTER_NAMES:
        return _CHARACTER_NAMES[char]
    if ord(char) < 0x20:
        return f"a control character (U+{ord(char):04X})"
    return f"a non-ASCII character (U+{ord(char):04X} {unicodedata.name(char, 'unnamed')})"


def _check_base_url(base_url: str, allow_insecure_http: bool) -> None:
    try:
        parts = urlsplit(base_url)
        parts.port  # noqa: B018 -- a bad port or bracket raises only when read
    except ValueError as exc:
        raise InputValidationError(f"MindVideo base URL {base_url!r} is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputValidationError(f"MindVideo base URL {base_url!r} must be an http(s) URL")
    found = invisible_character(base_url)
    if found is not None:
        raise InputValidationError(f"MindVideo base URL {base_url!r} contains {found[1]} at character {found[0]}")
    if parts.scheme == "http" and not allow_insecure_http and not is_loopback(parts.hostname):
        raise InsecureConnectionError(
            f"Refusing to send the MindVideo API key over plain http:// to {parts.hostname}. "
            "Use https://, or set allow_insecure_http in the connection's extra if the "
            "network is trusted."
        )


def _check_number(name: str, value: Any, *, minimum: float, inclusive: bool = True, whole: bool = False) -> None:
    kinds = (int,) if whole else (int, float)
    fine = (
        isinstance(value, kinds)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value >= minimum if inclusive else value > minimum)
    )
    if not fine:
        raise InputValidationError(f"MindVideo setting {name} = {value!r}: must be {EXPECTED[name]}")


def _check_proxy_url(where: str, url: str) -> None:
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        shown = url_without_password(url) if isinstance(url, str) else repr(url)
        raise InputValidationError(f"MindVideo: {where} = {shown!r} must be {EXPECTED['proxy']}")
    found = invisible_character(url)
    if found is not None:
        raise InputValidationError(
            f"MindVideo: {where} = {url_without_password(url)!r} contains {found[1]} at character {found[0]}"
        )


# -- the environment ------------------------------------------------------------------------


def environment_proxy(url: str, environ: Mapping[str, str]) -> str | None:
    """The proxy the environment sets for ``url``: ``<scheme>_proxy`` or ``all_proxy``, unless ``no_proxy`` covers it.

    Lower-case names win over upper-case ones, as in curl and ``urllib``; a proxy without a
    scheme is an ``http://`` one, as in curl and httpx.
    """
    found: dict[str, tuple[str, str]] = {}
    for name, value in sorted(environ.items(), key=lambda item: item[0].islower()):
        if name.lower().endswith("_proxy") and value.strip():
            found[name.lower()[: -len("_proxy")]] = (name, value.strip())
    parts = urlsplit(url)
    chosen = found.get(parts.scheme) or found.get("all")
    if chosen is None:
        return None
    no_proxy = found.get("no")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if no_proxy is not None and parts.hostname and bypasses_proxy(parts.hostname, port, no_proxy[1]):
        return None
    name, proxy = chosen
    if "://" not in proxy:
        proxy = f"http://{proxy}"
    _check_proxy_url(f"the environment's {name}", proxy)
    return proxy


def bypasses_proxy(hostname: str, port: int | None, no_proxy: str) -> bool:
    """Whether ``no_proxy`` (comma-separated, as curl reads it) exempts a host from the proxy.

    An entry matches the host and its subdomains (``example.com``, ``.example.com`` and
    ``*.example.com`` alike), an IP address or network (``10.0.0.0/8``), optionally only on
    one port (``example.com:8443``); ``*`` matches every host.
    """
    hostname = hostname.lower().strip("[]")
    for entry in (item.strip().lower() for item in no_proxy.split(",")):
        if entry == "*":
            return True
        entry_host, entry_port = entry, None
        head, colon, tail = entry.rpartition(":")
        if colon and tail.isdigit() and not _is_ip_network(entry):
            entry_host, entry_port = head, int(tail)
        entry_host = entry_host.strip("[]").removeprefix("*").lstrip(".")
        if not entry_host or (entry_port is not None and entry_port != port):
            continue
        if hostname == entry_host or hostname.endswith("." + entry_host) or _in_network(hostname, entry_host):
            return True
    return False


def _is_ip_network(entry: str) -> bool:
    try:
        ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return False
    return True


def _in_network(hostname: str, entry: str) -> bool:
    try:
        return ipaddress.ip_address(hostname) in ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return False


def is_loopback(hostname: str) -> bool:
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname.strip("[]")).is_loopback
    except ValueError:
        return False


def user_agent() -> str:
    # Asked of the root package, not of an import of Airflow: the client core imports no Airflow.
    airflow_version = installed_airflow_version() or "unknown"
    return f"airflow-provider-mindvideo/{__version__} apache-airflow/{airflow_version} httpx/{httpx.__version__}"


# -- reuse ------------------------------------------------------------------------------------


class RecentSettings:
    """Connection settings read lately, by connection id, each reusable for ``reuse_seconds`` after its reading.

    Pure: the caller passes the clock. Thousands of waits that a triggerer starts together
    would otherwise each look their connection up (Airflow's secrets backends, two secret-mask
    messages to the supervisor) and validate it again; within the window they share one
    reading. A reading older than the window is read again, so an edited connection reaches
    new waits within ``reuse_seconds``. Failed readings are never kept.
    """

    def __init__(self, reuse_seconds: float) -> None:
        self.reuse_seconds = reuse_seconds
        self._read: dict[str, tuple[float, ClientSettings]] = {}

    def get(self, conn_id: str, now: float) -> ClientSettings | None:
        found = self._read.get(conn_id)
        if found is None or now - found[0] >= self.reuse_seconds:
            return None
        return found[1]

    def put(self, conn_id: str, settings: ClientSettings, now: float) -> None:
        self._read[conn_id] = (now, settings)
