"""Headless Chromium driven over the DevTools protocol (websocket-client, a dependency of the pack):
open a page, evaluate JavaScript in it, collect its console errors, take screenshots.

Debian's `chromium` package is enough (`apt-get install chromium`); no driver, no other client.
"""
import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

# Without the background-networking flags Chromium tries to reach Google's services, which a closed
# network answers with refused connections and console noise.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio", "--remote-debugging-port=0"]


def find_chromium() -> str | None:
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


class JavaScriptError(RuntimeError):
    pass


class Browser:
    """One Chromium with one page. `errors` collects every console error, uncaught exception and failed
    request of the page, in order, as text."""

    def __init__(self, width: int = 1600, height: int = 1000, executable: str | None = None):
        import websocket

        executable = executable or find_chromium()
        if executable is None:
            raise FileNotFoundError("no chromium on PATH (Debian: apt-get install chromium)")
        self.profile = Path(tempfile.mkdtemp(prefix="distill_chromium_"))
        self.proc = subprocess.Popen([executable, *FLAGS, f"--user-data-dir={self.profile}",
                                      f"--window-size={width},{height}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            port = self._devtools_port()
            self.ws = websocket.create_connection(self._page_socket(port), timeout=120, suppress_origin=True)
        except BaseException:
            self.close()
            raise
        self.ids = itertools.count(1)
        self.errors: list[str] = []
        self.events: list[dict] = []
        for domain in ("Runtime", "Log", "Page"):
            self.send(f"{domain}.enable")
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def _devtools_port(self, timeout: float = 60.0) -> int:
        marker = self.profile / "DevToolsActivePort"
        start = time.time()
        while not marker.is_file() or not marker.read_text().strip():
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with status {self.proc.returncode}")
            if time.time() - start > timeout:
                raise TimeoutError(f"chromium did not open its DevTools port in {timeout}s")
            time.sleep(0.1)
        return int(marker.read_text().split()[0])

    @staticmethod
    def _page_socket(port: int) -> str:
        import requests

        for _ in range(100):
            pages = [t for t in requests.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
                     if t["type"] == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
            time.sleep(0.1)
        raise RuntimeError("chromium opened no page")

    def send(self, method: str, **params) -> dict:
        """Call a DevTools method and return its result; events that arrive meanwhile are recorded."""
        call_id = next(self.ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            if "method" in message:
                self._record(message)

    def _record(self, event: dict) -> None:
        self.events.append(event)
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            self.errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params["args"]))
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append(details.get("exception", {}).get("description") or details["text"])
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            self.errors.append(f"{entry['text']} {entry.get('url', '')}".strip())

    def js(self, expression: str, timeout: float = 120.0):
        """The value of a JavaScript expression (a promise is awaited), as JSON."""
        result = self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True,
                           timeout=timeout * 1000)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise JavaScriptError(details.get("exception", {}).get("description") or details["text"])
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 120.0, interval: float = 0.2):
        """Poll a JavaScript expression until it is truthy; returns its value."""
        start = time.time()
        while time.time() - start < timeout:
            value = self.js(expression)
            if value:
                return value
            time.sleep(interval)
        raise TimeoutError(f"not true after {timeout}s: {expression}")

    def goto(self, url: str, timeout: float = 120.0) -> None:
        self.send("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'", timeout)

    def screenshot(self, clip: dict | None = None, quality: int = 85) -> bytes:
        """A JPEG of the viewport, or of clip {x, y, width, height} in CSS pixels."""
        params = {"format": "jpeg", "quality": quality}
        if clip:
            params["clip"] = clip | {"scale": 1}
        return base64.b64decode(self.send("Page.captureScreenshot", **params)["data"])

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
