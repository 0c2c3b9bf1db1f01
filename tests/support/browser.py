"""A real headless Chromium driven over the DevTools protocol (for the web inbox's tests).

Chromium is started with ``--remote-debugging-port=0``; it writes the port it bound and
the browser's websocket path into ``DevToolsActivePort`` in its profile directory, so
there is no port race. Commands go over one websocket (aiohttp's client) with flattened
sessions, one per page. Only what the tests use is here: open a page, wait for its load
event, evaluate JavaScript (awaiting promises), take a screenshot, and evaluate inside a
child frame (an isolated world in that frame, which shares its DOM).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

__all__ = ["Browser", "Page", "chromium", "require_chromium"]

#: Seconds Chromium gets to start and write DevToolsActivePort.
BROWSER_START = 30.0
#: Seconds any single DevTools command (or awaited page promise) may take.
COMMAND_WAIT = 20.0


def require_chromium() -> str:
    """The Chromium binary, or skip (fail under ``FASTSMTP_REQUIRE_PEERS=1``, as CI runs)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "chromium is not installed (apt-get install chromium)"
        if os.environ.get("FASTSMTP_REQUIRE_PEERS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


class DevToolsError(AssertionError):
    """A DevTools command failed, or a page's script threw."""


class Browser:
    """One DevTools websocket to a running Chromium."""

    def __init__(self, ws: Any) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._events: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        self._waiters: list[tuple[str | None, str, asyncio.Future[dict[str, Any]]]] = []
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        import aiohttp

        async for frame in self._ws:
            if frame.type != aiohttp.WSMsgType.TEXT:
                break
            message = frame.json()
            if "id" in message:
                future = self._pending.pop(message["id"], None)
                if future is not None and not future.done():
                    future.set_result(message)
                continue
            session, method = message.get("sessionId"), message["method"]
            self._events.setdefault(method, []).append((session, message.get("params", {})))
            for waiter in list(self._waiters):
                if waiter[1] == method and waiter[0] in (None, session) and not waiter[2].done():
                    waiter[2].set_result(message.get("params", {}))
                    self._waiters.remove(waiter)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(DevToolsError("the browser closed the DevTools socket"))

    async def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> Any:
        """Run one DevTools command and return its result."""
        id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[id] = future
        message: dict[str, Any] = {"id": id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        await self._ws.send_json(message)
        reply = await asyncio.wait_for(future, COMMAND_WAIT)
        if "error" in reply:
            raise DevToolsError(f"{method}: {reply['error']}")
        return reply["result"]

    def expect(self, method: str, session: str | None = None) -> asyncio.Future[dict[str, Any]]:
        """A future for the next event ``method`` (create it before causing the event)."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.append((session, method, future))
        return future

    async def new_page(self, width: int = 1280, height: int = 860) -> Page:
        """A new tab (``about:blank``) with its own session."""
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
        page = Page(self, attached["sessionId"])
        # Out-of-process frames (Chromium puts sandboxed iframes in their own process)
        # get their own sessions, announced as Target.attachedToTarget events.
        await page.send("Target.setAutoAttach", {"autoAttach": True, "waitForDebuggerOnStart": False, "flatten": True})
        await page.send("Page.enable")
        await page.send("Runtime.enable")
        await page.send("Emulation.setDeviceMetricsOverride",
                        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        return page

    async def close(self) -> None:
        """Close the socket (the caller stops the process)."""
        await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


class Page:
    """One tab, through its flattened DevTools session."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session

    async def send(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """A DevTools command for this tab."""
        return await self.browser.send(method, params, self.session)

    async def goto(self, url: str) -> None:
        """Navigate and wait for the load event."""
        loaded = self.browser.expect("Page.loadEventFired", self.session)
        result = await self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise DevToolsError(f"navigating to {url}: {result['errorText']}")
        await asyncio.wait_for(loaded, COMMAND_WAIT)

    async def evaluate(self, expression: str, context_id: int | None = None) -> Any:
        """Evaluate ``expression`` in the page (awaiting a promise) and return its value."""
        params: dict[str, Any] = {"expression": expression, "awaitPromise": True, "returnByValue": True}
        if context_id is not None:
            params["contextId"] = context_id
        result = await self.send("Runtime.evaluate", params)
        if "exceptionDetails" in result:
            raise DevToolsError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def child_frames(self) -> list[dict[str, Any]]:
        """The frames below the main one (``{"id", "url", ...}`` each)."""
        tree = (await self.send("Page.getFrameTree"))["frameTree"]
        found: list[dict[str, Any]] = []

        def walk(node: dict[str, Any]) -> None:
            for child in node.get("childFrames", []):
                found.append(child["frame"])
                walk(child)

        walk(tree)
        return found

    def frame_sessions(self) -> list[str]:
        """The sessions of the out-of-process child frames attached so far."""
        return [
            params["sessionId"]
            for parent, params in self.browser._events.get("Target.attachedToTarget", [])
            if parent == self.session and params["targetInfo"]["type"] == "iframe"
        ]

    async def evaluate_in_frame(self, url: str, expression: str) -> Any:
        """Evaluate ``expression`` in the child frame showing ``url``, in an isolated world
        (it shares the frame's DOM, and works where the frame's own script is disabled).

        The frame may live in this page's process (then it is in the frame tree) or in its
        own (then it has its own session).
        """
        for frame in await self.child_frames():
            if frame["url"] == url:
                world = await self.send("Page.createIsolatedWorld", {"frameId": frame["id"], "worldName": "test"})
                return await self.evaluate(expression, world["executionContextId"])
        for session in self.frame_sessions():
            child = Page(self.browser, session)
            try:
                tree = (await child.send("Page.getFrameTree"))["frameTree"]
            except DevToolsError:  # a frame already gone (an earlier message's view)
                continue
            if tree["frame"]["url"] == url:
                world = await child.send("Page.createIsolatedWorld",
                                         {"frameId": tree["frame"]["id"], "worldName": "test"})
                return await child.evaluate(expression, world["executionContextId"])
        raise DevToolsError(f"no frame shows {url}: {await self.child_frames()} {self.frame_sessions()}")

    async def screenshot(self, path: Path) -> Path:
        """Save a PNG of the viewport to ``path``."""
        shot = await self.send("Page.captureScreenshot", {"format": "png"})
        path.write_bytes(base64.b64decode(shot["data"]))
        return path


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Run a headless Chromium for the block; yield its DevTools connection."""
    import aiohttp

    binary = require_chromium()
    # Chromium's helper processes may still be writing their profile when the browser
    # itself has exited: the scratch profile's removal is not what any test checks.
    with tempfile.TemporaryDirectory(prefix="fastsmtp-chromium-",
                                     ignore_cleanup_errors=True) as profile:
        argv = [
            binary, "--headless=new", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
            "--remote-debugging-port=0", "--no-first-run", "--no-default-browser-check",
            "--disable-extensions", "--disable-background-networking", "--disable-sync",
            "--hide-scrollbars", "--lang=en-US", "about:blank",
        ]
        with tempfile.TemporaryFile() as errors:
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=errors)
            try:
                active = Path(profile, "DevToolsActivePort")
                deadline = time.monotonic() + BROWSER_START
                # The file is Chromium's only readiness signal: poll it, bounded.
                while not (active.exists() and len(active.read_text().splitlines()) >= 2):
                    if proc.poll() is not None:
                        errors.seek(0)
                        raise AssertionError(f"chromium exited with {proc.returncode}: "
                                             f"{errors.read().decode(errors='replace')[-2000:]}")
                    assert time.monotonic() < deadline, "chromium did not write DevToolsActivePort in time"
                    await asyncio.sleep(0.05)
                port, path = active.read_text().splitlines()[:2]
                async with aiohttp.ClientSession() as http:
                    ws = await http.ws_connect(f"ws://127.0.0.1:{port}{path}", max_msg_size=0)
                    browser = Browser(ws)
                    try:
                        yield browser
                    finally:
                        await browser.close()
            finally:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
