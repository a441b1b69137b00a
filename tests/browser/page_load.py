"""How long the console's device list takes to show in headless Chromium:
from navigation start to the list drawn with all N devices counted, as the
page's own performance.now() reports it. For benches/console.rs; the
console must run without credentials (loopback), so no login is timed.

Prints one JSON line: {"runs_ms": [...], "median_ms": M}.
"""

import argparse
import json
import sys
import tempfile

from chromium import browser
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--devices", type=int, required=True)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    want = f"of {a.devices}"
    runs = []
    with tempfile.TemporaryDirectory() as profile:
        d = browser(profile)
        try:
            for _ in range(a.runs):
                d.get("about:blank")
                d.get(a.url + "#/devices")
                WebDriverWait(d, 60).until(
                    lambda _: want in d.find_element(By.ID, "count").text
                )
                runs.append(d.execute_script("return performance.now()"))
        finally:
            d.quit()
    runs.sort()
    print(json.dumps({"runs_ms": [round(r) for r in runs], "median_ms": round(runs[len(runs) // 2])}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
