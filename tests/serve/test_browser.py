"""The web chat page, end to end in headless Chromium (Debian's chromium + chromedriver via Selenium):
upload a video, see it in the player, ask twice, watch answers stream in, see frame thumbnails."""

import os
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER) and os.environ.get("CI") != "true",
    reason="needs Debian's chromium and chromium-driver (.ci/run installs them)")


@pytest.fixture()
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900"):
        opts.add_argument(flag)
    drv = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
    yield drv
    drv.quit()


def test_chat_page_end_to_end(server, browser, synth_video, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 60)
    browser.get(server.url + "/")
    assert "kangaroo" in browser.title
    browser.find_element(By.ID, "nframes").clear()
    browser.find_element(By.ID, "nframes").send_keys("6")
    browser.find_element(By.ID, "file").send_keys(synth_video)
    wait.until(EC.text_to_be_present_in_element((By.ID, "status"), "ready"))
    assert "/v1/files/" in browser.find_element(By.ID, "player").get_attribute("src")
    for i, q in enumerate(["What happens in the video?", "你好，然后呢？"]):
        browser.find_element(By.ID, "q").send_keys(q)
        browser.find_element(By.ID, "send").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".msg.assistant")) == i + 1
                   and d.find_element(By.ID, "send").is_enabled())
    users = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".msg.user")]
    assert users == ["What happens in the video?", "你好，然后呢？"]
    assert not browser.find_elements(By.CSS_SELECTOR, ".msg.error")
    thumbs = browser.find_elements(By.CSS_SELECTOR, "#frames img")
    assert len(thumbs) == 6
    caps = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#frames figcaption")]
    assert all(c.endswith("s") for c in caps)
    browser.save_screenshot(str(tmp_path / "page.png"))
    assert os.path.getsize(tmp_path / "page.png") > 1000
