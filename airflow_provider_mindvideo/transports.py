"""An httpx transport over aiohttp, and the pooled async client triggers share.

The provider is written against httpx. In the triggerer, though, thousands of waits poll
through one event loop, and httpx's own connection pool costs several milliseconds of CPU
per request once many coroutines share it (see ``benchmarks/results.md``). aiohttp's pool
does not degrade that way, so triggers send through it when aiohttp is installed (it comes
with the ``aiohttp`` extra, and with the HTTP provider); everything above the transport --
requests, retries, parsing -- stays the same httpx code the worker runs, and both send
through the proxy and trust the certificates that the connection's settings decide.

Why not the ``httpx-aiohttp`` package: see ``benchmarks/transport-choice.md``.
"""

from __future__ import annotations

import asyncio
import functools
import http.cookiejar
import ssl
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    import aiohttp
    import yarl

    from airflow_provider_mindvideo.client.settings import ClientSettings

# Waits share connections; a wide fan-out should not open one per waiting task.
MAX_CONNECTIONS = 64


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Send httpx requests through one ``aiohttp.ClientSession`` (created on first use, in the running loop).

    Redirects, retries and decoding stay httpx's business: the session follows no redirect
    and hands over the body as it came (httpx decompresses it).

    :param proxy: Send every request through this http(s) proxy (its credentials in the URL).
    :param ssl_context: The certificates to trust; None: aiohttp's default.
    """

    def __init__(
        self,
        max_connections: int = MAX_CONNECTIONS,
        *,
        proxy: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._max_connections = max_connections
        self._proxy = _aiohttp_url(proxy) if proxy else None
        self._ssl_context = ssl_context
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[float | None, float | None], aiohttp.ClientTimeout] = {}

    def _get_session(self) -> aiohttp.ClientSession:
        import aiohttp

        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self._max_connections,
                    ssl=True if self._ssl_context is None else self._ssl_context,
                ),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
                # Not trust_env: the proxy is decided by the connection's settings, and with it
                # aiohttp would look a ~/.netrc password up for every request (in a thread), and
                # refuse to send our Authorization header beside one it found.
                trust_env=False,
                # Like the httpx clients above it: no cookie is kept or sent back.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        import aiohttp

        timeouts = request.extensions.get("timeout", {})
        key = (timeouts.get("connect"), timeouts.get("read"))
        timeout = self._timeouts.get(key)
        if timeout is None:
            timeout = self._timeouts[key] = aiohttp.ClientTimeout(connect=key[0], sock_connect=key[0], sock_read=key[1])
        try:
            async with self._get_session().request(
                request.method,
                _aiohttp_url(str(request.url)),
                headers=request.headers.multi_items(),
                data=await request.aread() or None,
                allow_redirects=False,
                timeout=timeout,
                proxy=self._proxy,
            ) as answer:
                body = await answer.read()
        except TimeoutError as exc:
            raise httpx.ReadTimeout(f"{type(exc).__name__}: {exc}", request=request) from exc
        except aiohttp.ClientProxyConnectionError as exc:
            raise httpx.ProxyError(f"{type(exc).__name__}: {exc}", request=request) from exc
        except aiohttp.ClientConnectorError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        except aiohttp.ClientHttpProxyError as exc:
            raise httpx.ProxyError(f"{type(exc).__name__}: {exc}", request=request) from exc
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            raise httpx.RemoteProtocolError(f"{type(exc).__name__}: {exc}", request=request) from exc
        except aiohttp.ClientError as exc:
            raise httpx.TransportError(f"{type(exc).__name__}: {exc}", request=request) from exc
        return httpx.Response(
            answer.status,
            headers=list(answer.raw_headers),
            content=body,
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def let_go(self) -> None:
        """Drop the session of an event loop that has closed, where it can no longer be closed the async way.

        Without this, aiohttp reports an "Unclosed client session" error whenever the session is
        garbage-collected. Its sockets are released when the closed loop's are.
        """
        session, self._session = self._session, None
        if session is None or session.closed:
            return
        connector = session.connector
        session.detach()
        if connector is not None:
            # The synchronous half of connector.close(); it skips what needs a running loop.
            connector._close()


@functools.lru_cache(maxsize=8192)
def _aiohttp_url(url: str) -> yarl.URL:
    # A wait polls one URL many times; parsing it once saves aiohttp a URL parse per poll.
    import yarl

    return yarl.URL(url, encoded=True)


class _RefusingJar(http.cookiejar.CookieJar):
    def set_cookie(self, cookie: http.cookiejar.Cookie) -> None:
        """One jar is shared by every client: a cookie written into it would go out with all their calls."""


class _NoCookies(httpx.Cookies):
    def extract_cookies(self, response: httpx.Response) -> None:
        """The API sets no cookies; looking for them cost a tenth of a call's CPU."""


_NO_COOKIES = _NoCookies(_RefusingJar())


class _Cookieless:
    """Keeps no cookies: the API sets none, and a jar would replay whatever a proxy or redirect set."""

    @property
    def cookies(self) -> httpx.Cookies:
        return _NO_COOKIES

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        pass


class CallingClient(_Cookieless, httpx.Client):
    """The hook's ``httpx.Client`` for the API's calls."""


class PollingClient(_Cookieless, httpx.AsyncClient):
    """An ``httpx.AsyncClient`` for many small JSON polls."""


def has_aiohttp() -> bool:
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        return False
    return True


def async_transport(settings: ClientSettings) -> httpx.AsyncBaseTransport:
    """The fastest transport available for many concurrent requests, through the connection's proxy."""
    options = settings.transport_options()
    if has_aiohttp():
        return AiohttpTransport(proxy=options["proxy"], ssl_context=options["verify"])
    return httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=MAX_CONNECTIONS), **options)


@dataclass
class _Shared:
    client: httpx.AsyncClient
    transport: httpx.AsyncBaseTransport
    borrowers: int = 0


# One client per event loop and account, shared by every wait on that loop. Keyed by the loop
# (weakly) because neither httpx's nor aiohttp's clients can move between loops; closed when
# its last borrower gives it back, so a triggerer that stops cancels its triggers and exits clean.
_shared: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[ClientSettings, _Shared]] = (
    weakref.WeakKeyDictionary()
)


def borrow_async_client(settings: ClientSettings) -> httpx.AsyncClient:
    """The running loop's client for ``settings`` (an account and its options); give it back when done."""
    clients = _shared.setdefault(asyncio.get_running_loop(), {})
    shared = clients.get(settings)
    if shared is None:
        transport = async_transport(settings)
        shared = clients[settings] = _Shared(PollingClient(**settings.client_options(), transport=transport), transport)
    shared.borrowers += 1
    return shared.client


async def give_back_async_client(settings: ClientSettings) -> None:
    clients = _shared.get(asyncio.get_running_loop(), {})
    shared = clients.get(settings)
    if shared is None:
        return
    shared.borrowers -= 1
    if shared.borrowers <= 0:
        del clients[settings]
        await shared.client.aclose()


def forget_closed_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Let go of the shared clients of an event loop that has closed (an earlier ``asyncio.run()``, say).

    Its borrowers are gone with it, so nobody will give these clients back. Each client holds its
    loop, so the weakly keyed registry would otherwise keep both for the life of the process.
    """
    if not loop.is_closed():
        return
    for shared in _shared.pop(loop, {}).values():
        if isinstance(shared.transport, AiohttpTransport):
            shared.transport.let_go()
