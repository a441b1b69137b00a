"""Debian's chromium, headless, through its chromium-driver: nothing is
downloaded, and the flags keep it off the network."""

from selenium import webdriver
from selenium.webdriver.chrome.service import Service


def browser(profile_dir):
    """A headless Chromium with an empty profile in `profile_dir`."""
    o = webdriver.ChromeOptions()
    o.binary_location = "/usr/bin/chromium"
    for a in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--no-first-run",
        "--window-size=1280,900",
        f"--user-data-dir={profile_dir}",
    ]:
        o.add_argument(a)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=o)
