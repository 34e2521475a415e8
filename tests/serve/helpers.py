"""A `sift serve` app on a free loopback port in a background thread, and headless Debian Chromium to drive it."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator

from tests.conftest import free_ports

CHROMIUM = os.environ.get("SIFT_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("SIFT_CHROMEDRIVER", "/usr/bin/chromedriver")


def browser_available() -> bool:
    return (os.path.exists(CHROMIUM) or bool(shutil.which("chromium"))) and (
        os.path.exists(CHROMEDRIVER) or bool(shutil.which("chromedriver")))


@contextlib.contextmanager
def serve_in_thread(runs_root: str) -> Iterator[str]:
    """uvicorn serving `create_app(runs_root)` on 127.0.0.1; yields the base URL, stops on exit."""
    import uvicorn

    from pipelines.serve.app import create_app

    port = free_ports(1)[0]
    server = uvicorn.Server(uvicorn.Config(create_app(runs_root), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("sift serve did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextlib.contextmanager
def chromium(width: int = 1280, height: int = 900) -> Iterator[object]:
    """Headless Chromium through Debian's chromedriver (no downloads: Selenium Manager is never asked)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    profile = tempfile.mkdtemp(prefix="sift-chromium-")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--window-size={width},{height}", f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    driver_path = CHROMEDRIVER if os.path.exists(CHROMEDRIVER) else shutil.which("chromedriver")
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
