"""The web console in a real headless Chromium (Debian's chromium and
chromium-driver), driven by Selenium: a wrong password shows no data, log
in, the device list, a live value changing as the simulated device
notifies, a Read from the page, an OTA progress bar, the health page.
Screenshots go to --shots. Exit status 0 when every step held.

Run by tests/console.rs, which starts the gateway and the simulator.
"""

import argparse
import sys
import tempfile
import time

from chromium import browser
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--image", required=True, help="an OTA image id in the store")
    ap.add_argument("--shots", required=True)
    a = ap.parse_args()
    step = "start"

    with tempfile.TemporaryDirectory() as profile:
        d = browser(profile)
        wait = WebDriverWait(d, 20)

        def shot(name):
            d.save_screenshot(f"{a.shots}/{name}.png")

        def text_of(sel):
            return d.find_element(By.CSS_SELECTOR, sel).text

        try:
            step = "a wrong password shows no data"
            d.get(a.url)
            wait.until(EC.visibility_of_element_located((By.ID, "password")))
            d.find_element(By.ID, "password").send_keys("not-the-password")
            d.find_element(By.CSS_SELECTOR, "#login button").click()
            wait.until(lambda _: "wrong password" in text_of("#login-error"))
            assert a.endpoint not in d.page_source, "device data shown without login"
            assert not d.find_element(By.ID, "nav").is_displayed()
            shot("wrong-password")

            step = "log in and see the device list"
            pw = d.find_element(By.ID, "password")
            pw.clear()
            pw.send_keys(a.password)
            d.find_element(By.CSS_SELECTOR, "#login button").click()
            wait.until(lambda _: a.endpoint in text_of("#view"))
            rows = d.find_elements(By.CSS_SELECTOR, "#devices tbody tr")
            assert len(rows) >= 1, "no device rows"
            d.find_element(By.ID, "filter").send_keys(a.endpoint)
            wait.until(lambda _: text_of("#count").startswith("1 of"))
            shot("devices")

            step = "open the device and Read a resource from the page"
            d.find_element(By.LINK_TEXT, a.endpoint).click()
            wait.until(EC.presence_of_element_located((By.ID, "actions")))
            Select(d.find_element(By.NAME, "method")).select_by_visible_text("Read")
            path = d.find_element(By.NAME, "path")
            path.clear()
            path.send_keys("/3/0/0")
            d.find_element(By.CSS_SELECTOR, "#actions button[type=submit]").click()
            wait.until(lambda _: "CONTENT" in text_of("#result"))
            assert "lwm2m-gw" in text_of("#result"), text_of("#result")
            # The device's profile keeps a transport log: its registration
            # and this Read show on the page.
            wait.until(lambda _: "Read: CONTENT" in text_of("#transport-log"))
            assert "Registered: lwm2m=" in text_of("#transport-log"), text_of("#transport-log")

            step = "watch a live value change as the device notifies"
            Select(d.find_element(By.NAME, "method")).select_by_visible_text("Observe")
            path.clear()
            path.send_keys("/3303/0/5700")
            d.find_element(By.CSS_SELECTOR, "#actions button[type=submit]").click()
            row = '#values tr[data-key="/3303/0/5700"]'
            # Each notification stamps the row anew: its time cell moves.
            cell = row + " td:nth-child(4)"
            wait.until(lambda _: d.find_elements(By.CSS_SELECTOR, cell))
            name = text_of(row + " td:nth-child(2)")
            assert name == "Temperature: Sensor Value", name
            assert "(Temperature)" in text_of("#objects"), text_of("#objects")
            first = text_of(cell)
            wait.until(lambda _: text_of(cell) != first)
            second = text_of(cell)
            wait.until(lambda _: text_of(cell) != second)
            shot("device-live")

            step = "start an OTA update and watch its progress bar"
            d.get(a.url + "#/ota")
            wait.until(EC.presence_of_element_located((By.NAME, "endpoint")))
            wait.until(lambda _: d.find_elements(By.CSS_SELECTOR, f'select[name=image] option[value="{a.image}"]'))
            d.find_element(By.NAME, "endpoint").send_keys(a.endpoint)
            Select(d.find_element(By.NAME, "image")).select_by_value(a.image)
            d.find_element(By.CSS_SELECTOR, "form.actions button[type=submit]").click()
            bar = f'#updates tr[data-endpoint="{a.endpoint}"] [role=progressbar]'

            def progress(_):
                bars = d.find_elements(By.CSS_SELECTOR, bar)
                return bars and int(bars[0].get_attribute("aria-valuenow") or 0)

            wait.until(lambda _: (progress(_) or 0) > 0)
            shot("ota-progress")
            WebDriverWait(d, 120).until(lambda _: (progress(_) or 0) >= 100)
            shot("ota-done")

            step = "the health page"
            d.get(a.url + "#/health")
            wait.until(lambda _: "registrations" in text_of("#health"))
            shot("health")
            print("console in chromium: all steps held")
            return 0
        except Exception as e:  # noqa: BLE001 - report which step failed
            shot("failed")
            print(f"console in chromium: step '{step}' failed: {e!r}", file=sys.stderr)
            return 1
        finally:
            d.quit()


if __name__ == "__main__":
    sys.exit(main())
