"""Headless Chromium through Selenium for the HTML page tests, with the browser console and
the Chrome performance log (network events) recorded."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def chromium_paths() -> tuple[str, str]:
    """Debian's chromium and chromium-driver (``make browser``); installed here when missing and
    we may (root + apt)."""
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (browser and driver) and os.geteuid() == 0 and shutil.which("apt-get") \
            and os.environ.get("DECEVAL_NO_APT") != "1":
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, capture_output=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"], check=False, env=env,
                       capture_output=True, timeout=900)
        browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (browser and driver):
        pytest.skip("headless Chromium not available: make browser (apt-get install chromium chromium-driver)")
    return browser, driver


def chrome(width: int = 1400, height: int = 1000):
    """A headless Chrome session that keeps the console and the network (performance) log."""
    pytest.importorskip("selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = chromium_paths()
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              f"--window-size={width},{height}"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(driver_path), options=opts)
