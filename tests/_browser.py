"""Headless Chromium for the report tests: run it on a page and see every network request the page made.

Chromium writes its NetLog (``--log-net-log``), the record of every request that went through its network
stack, whether it succeeded or not; ``file:`` and ``data:`` loads never go there. The browser's own
background requests (component updater, account checks) are in it too, so a request counts as the page's
when its network isolation key or site-for-cookies is the ``file://`` page's. ``--host-resolver-rules``
fails every host name locally, so a page that does ask for something still reaches nothing.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import NamedTuple

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome", "chrome")
                 if shutil.which(n)), None)
SKIP_REASON = "no chromium binary (apt-get install chromium)"

_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--disable-default-apps", "--no-pings", '--host-resolver-rules=MAP * ~NOTFOUND',
          "--enable-logging=stderr", "--v=0")


class Run(NamedTuple):
    returncode: int
    stdout: str
    stderr: str
    requests: list[str]     # URLs the page asked the network for (none for a self-contained page)


def chromium(*args: str, timeout: float = 120) -> Run:
    """Run headless Chromium with ``args`` (``--dump-dom URL``, ``--screenshot=...``) and its NetLog on."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as tmp:
        netlog = Path(tmp) / "netlog.json"
        done = subprocess.run([CHROMIUM, *_FLAGS, f"--user-data-dir={tmp}/profile", f"--log-net-log={netlog}",
                               *args], capture_output=True, text=True, timeout=timeout)
        return Run(done.returncode, done.stdout, done.stderr, page_requests(netlog))


def page_requests(netlog: Path) -> list[str]:
    """The URLs of the requests that a ``file://`` page started, from a NetLog file."""
    log = json.loads(netlog.read_text(encoding="utf-8"))
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = []
    for event in log.get("events", []):
        params = event.get("params") or {}
        if event["type"] != start or "url" not in params:
            continue
        context = f"{params.get('network_isolation_key', '')} {params.get('site_for_cookies', '')}"
        if "file://" in context:
            urls.append(params["url"])
    return urls
