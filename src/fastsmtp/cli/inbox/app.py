"""The web inbox's aiohttp application (:func:`make_app`) and its runner (:class:`WebInbox`).

Routes: ``GET /`` (the page, ``/inbox.js``, ``/inbox.css``), ``GET /api/messages`` (the
list, newest first), ``DELETE /api/messages`` (clear), ``GET /api/messages/{id}`` (one
message: headers, text, HTML, attachments), ``GET /api/messages/{id}/raw`` (the source),
``GET /api/messages/{id}/html`` (the HTML part, sandboxed), ``DELETE /api/messages/{id}``
and ``GET /api/events`` (server-sent ``change`` events: the page then fetches the list).
The security rules are in the package docstring (:mod:`fastsmtp.cli.inbox`).

This module imports aiohttp (the ``aiofastsmtp[web]`` extra).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from .page import PAGE_CSS, PAGE_HTML, PAGE_JS
from .store import MessageStore, StoredMessage

__all__ = ["WEB_HOST", "STORE", "make_app", "WebInbox"]

log = logging.getLogger("fastsmtp.cli.inbox")

#: The only address the inbox listens on: it shows every message to whoever connects.
WEB_HOST = "127.0.0.1"
#: ``Host`` names a request may carry (anything else may be a DNS-rebinding attack).
_LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
#: Seconds between keep-alive comments on an idle event stream (proxies drop silent ones).
_KEEPALIVE = 15.0
#: Seconds open requests get to finish when the inbox stops (the event streams end at once).
_SHUTDOWN_TIMEOUT = 2.0

#: The page's own policy: only its own script, style and API; no inline code at all.
_PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "frame-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
#: A message's HTML part: sandboxed (an opaque origin, no script, no forms, no popups),
#: inline style allowed so it looks like the mail it is, nothing fetched from anywhere
#: (no tracking pixels, no remote fonts) except inline ``data:`` images.
_MESSAGE_HTML_CSP = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:"
#: Everything else (JSON, raw text, the event stream) is data, never a document to run.
_DATA_CSP = "default-src 'none'; frame-ancestors 'none'; sandbox"


STORE = web.AppKey("store", MessageStore)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _loopback_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse a request whose ``Host`` is not a loopback name (DNS rebinding)."""
    try:
        host = request.url.host
    except ValueError:
        host = None
    if host not in _LOOPBACK_NAMES:
        raise web.HTTPMisdirectedRequest(
            text="the fastsmtp inbox answers only on http://127.0.0.1:PORT/ or http://localhost:PORT/\n"
        )
    return await handler(request)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Headers on every response (set before they are sent, event streams included)."""
    response.headers.setdefault("Content-Security-Policy", _DATA_CSP)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers.setdefault("Cache-Control", "no-store")


def _static(body: str, content_type: str, csp: str | None = None) -> Handler:
    async def serve(request: web.Request) -> web.StreamResponse:
        response = web.Response(text=body, content_type=content_type, charset="utf-8")
        if csp is not None:
            response.headers["Content-Security-Policy"] = csp
        return response

    return serve


def _message(request: web.Request) -> StoredMessage:
    store = request.app[STORE]
    id = int(request.match_info["id"])
    message = store.get(id)
    if message is None:
        raise web.HTTPNotFound(
            text=f'{{"error": "no message {id}: deleted, or dropped (the inbox keeps the newest '
            f'{store.max_messages})"}}',
            content_type="application/json",
        )
    return message


async def _list(request: web.Request) -> web.StreamResponse:
    store = request.app[STORE]
    return web.json_response({
        "total": len(store),
        "max_messages": store.max_messages,
        "version": store.version,
        "messages": [message.summary() for message in store],
    })


async def _detail(request: web.Request) -> web.StreamResponse:
    return web.json_response(_message(request).detail())


async def _raw(request: web.Request) -> web.StreamResponse:
    # text/plain (not message/rfc822, which browsers download): shown as it came.
    return web.Response(body=_message(request).raw, content_type="text/plain", charset="utf-8")


async def _html(request: web.Request) -> web.StreamResponse:
    html = _message(request).html()
    if html is None:
        raise web.HTTPNotFound(text="this message has no HTML part\n")
    response = web.Response(text=html, content_type="text/html", charset="utf-8")
    response.headers["Content-Security-Policy"] = _MESSAGE_HTML_CSP
    return response


async def _delete(request: web.Request) -> web.StreamResponse:
    message = _message(request)
    request.app[STORE].delete(message.id)
    return web.Response(status=204)


async def _clear(request: web.Request) -> web.StreamResponse:
    request.app[STORE].clear()
    return web.Response(status=204)


async def _events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: one ``change`` event now and after every change."""
    store = request.app[STORE]
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    changed = store.subscribe()
    try:
        # retry: the browser reconnects after a second if the server restarts.
        await response.write(f"retry: 1000\nevent: change\ndata: {store.version}\n\n".encode())
        while not store.closed:
            try:
                await asyncio.wait_for(changed.wait(), _KEEPALIVE)
            except asyncio.TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            changed.clear()
            if store.closed:
                break
            await response.write(f"event: change\ndata: {store.version}\n\n".encode())
    except ConnectionResetError:  # the page went away
        pass
    finally:
        store.unsubscribe(changed)
    return response


async def _end_streams(app: web.Application) -> None:
    app[STORE].close()


def make_app(store: MessageStore) -> web.Application:
    """The inbox's aiohttp application over ``store`` (routes: see the module docstring)."""
    app = web.Application(middlewares=[_loopback_only])
    app[STORE] = store
    app.on_response_prepare.append(_security_headers)
    app.on_shutdown.append(_end_streams)
    app.router.add_get("/", _static(PAGE_HTML, "text/html", _PAGE_CSP))
    app.router.add_get("/inbox.js", _static(PAGE_JS, "text/javascript"))
    app.router.add_get("/inbox.css", _static(PAGE_CSS, "text/css"))
    app.router.add_get("/api/messages", _list)
    app.router.add_delete("/api/messages", _clear)
    app.router.add_get(r"/api/messages/{id:\d+}", _detail)
    app.router.add_delete(r"/api/messages/{id:\d+}", _delete)
    app.router.add_get(r"/api/messages/{id:\d+}/raw", _raw)
    app.router.add_get(r"/api/messages/{id:\d+}/html", _html)
    app.router.add_get("/api/events", _events)
    return app


class WebInbox:
    """The inbox's web server on 127.0.0.1, on the running event loop.

    Args:
        store: The messages to show.
        port: The port; 0 picks a free one (read :attr:`port` after :meth:`start`).
    """

    def __init__(self, store: MessageStore, port: int = 0) -> None:
        self.store = store
        self._port = port
        self._runner: web.AppRunner | None = None

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        return self._port

    @property
    def url(self) -> str:
        """The page's address."""
        return f"http://{WEB_HOST}:{self.port}/"

    async def start(self) -> None:
        """Listen; returns once the socket is bound."""
        runner = web.AppRunner(make_app(self.store), shutdown_timeout=_SHUTDOWN_TIMEOUT)
        await runner.setup()
        try:
            await web.TCPSite(runner, WEB_HOST, self._port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        log.info("web inbox on %s", self.url)

    async def close(self) -> None:
        """End the event streams and stop listening."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> WebInbox:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
