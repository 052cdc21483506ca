"""A person in a browser: Debian's headless Chromium through sandbox login, consent and the callback page."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from tests.e2e.localrun import ARTIFACTS, LocalRun

pytestmark = pytest.mark.browser

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
WAIT_SECONDS = 30


def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    found = _chromium()
    if found is None:
        reason = "chromium and chromium-driver are not installed (apt-get install -y chromium chromium-driver)"
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(reason + " and REQUIRE_BROWSER=1")
        pytest.skip(reason)

    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=found[1]))
    driver.set_page_load_timeout(WAIT_SECONDS)
    try:
        yield driver
    finally:
        driver.quit()


def test_a_person_connects_through_login_and_consent(local_run: LocalRun, browser: WebDriver) -> None:
    wait = WebDriverWait(browser, WAIT_SECONDS)
    # Given a connect link, opened in a browser that is not logged in to Apicbase
    browser.get(local_run.connect_session("e2e-browser")["connect_url"])

    # When the person logs in as demo and authorizes
    wait.until(expected_conditions.visibility_of_element_located((By.ID, "id_username"))).send_keys("demo")
    browser.find_element(By.ID, "id_password").send_keys("demo")
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(expected_conditions.element_to_be_clickable((By.NAME, "allow"))).click()

    # Then they land on the callback page, which tells them they are done
    wait.until(expected_conditions.url_contains("/oauth/callback?"))
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "browser-callback.png"))
    assert browser.current_url.startswith(local_run.callback_url + "?")
    assert browser.title == "Apicbase connected"
    assert browser.find_element(By.TAG_NAME, "h1").text == "Apicbase connected"
    page = browser.find_element(By.TAG_NAME, "main").text
    assert "Your Apicbase library Demo's kitchen is connected, signed in as demo." in page
    assert "You can close this window." in page
    # And the broker stored the connection
    assert local_run.api("GET", "/connections/e2e-browser").json()["status"] == "active"
