"""Headless Chromium (Debian package `chromium`) driven over the DevTools protocol, to look at
a page the way a person would: load it, wait until a condition holds in the page, then take
a screenshot and the rendered DOM.

    dom = render_page(url, ARTIFACTS / "page.png", ready="document.title !== ''")

Waiting on a condition, not a fixed time, keeps it reliable on a busy machine.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import aiohttp  # comes with ray[default]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"  # gitignored
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
    # No WebGL (there is no GPU here): pages such as TensorBoard then draw their charts as
    # SVG, which shows in the DOM as well as in the picture.
    "--disable-webgl",
    "--disable-3d-apis",
    # Loopback only: no background traffic, and no host name resolves to anything else.
    "--disable-background-networking",
    "--disable-component-update",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]


def render_page(
    url: str, screenshot: Path, ready: str, height: int = 1400, timeout_s: float = 120
) -> str:
    """Open `url`, wait until the JavaScript expression `ready` is true, save a PNG of the
    page to `screenshot` and return the DOM as rendered then."""
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dn-chromium-") as profile:
        browser = subprocess.Popen(
            [
                CHROMIUM,
                *FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size=1400,{height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # its own process group: the browser and its helpers
        try:
            port = _devtools_port(Path(profile), browser, timeout_s)
            png, dom = asyncio.run(asyncio.wait_for(_render(port, url, ready), timeout_s))
        finally:
            os.killpg(browser.pid, signal.SIGKILL)
            browser.wait()
            _wait_for_group_to_exit(browser.pid)  # before its profile directory goes
    screenshot.write_bytes(png)
    return dom


def _wait_for_group_to_exit(pgid: int, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def _devtools_port(profile: Path, browser: subprocess.Popen, timeout_s: float) -> int:
    active = profile / "DevToolsActivePort"  # Chromium writes the port it picked here
    deadline = time.monotonic() + timeout_s
    while not (active.exists() and active.read_text().strip()):
        if browser.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("chromium did not start its DevTools server")
        time.sleep(0.1)
    return int(active.read_text().split()[0])


async def _render(port: int, url: str, ready: str) -> tuple[bytes, str]:
    async with aiohttp.ClientSession() as session:
        while True:  # the first tab may appear a moment after the DevTools server
            async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
                pages = [t for t in await response.json() if t["type"] == "page"]
            if pages:
                break
            await asyncio.sleep(0.1)
        page = pages[0]
        async with session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            ids = itertools.count(1)

            async def call(method: str, **params):
                message_id = next(ids)
                await ws.send_json({"id": message_id, "method": method, "params": params})
                while (reply := await ws.receive_json()).get("id") != message_id:
                    pass  # events we did not subscribe to, or replies to nothing
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

            async def evaluate(expression: str):
                result = await call("Runtime.evaluate", expression=expression, returnByValue=True)
                return result["result"].get("value")

            await call("Page.navigate", url=url)
            while not await evaluate(f"Boolean({ready})"):
                await asyncio.sleep(0.25)
            await asyncio.sleep(1)  # let animations settle before the picture
            png = base64.b64decode((await call("Page.captureScreenshot", format="png"))["data"])
            return png, await evaluate("document.documentElement.outerHTML")


def polylines(min_points: int) -> str:
    """JavaScript: how many SVG paths on the page are lines through at least `min_points`
    points (chart curves, not icons): for `ready=f"{polylines(10)} >= 4"`."""
    return (
        "[...document.querySelectorAll('path')].filter(p => "
        f"(p.getAttribute('d') || '').split('L').length >= {min_points}).length"
    )
