"""Regenerate docs/compare-page.png: runs the screenshot browser test with
PAIRLOOP_SCREENSHOT=1 (needs /usr/bin/chromium, DATABASE_URL and REDIS_URL).

    DEBUG=1 DATABASE_URL=... REDIS_URL=... python bench/screenshot.py
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    env = {**os.environ, "PAIRLOOP_SCREENSHOT": "1"}
    test = "tests/e2e/test_compare_browser.py::test_compare_page_screenshot"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", test], cwd=ROOT, env=env, check=False
    )
    if result.returncode == 0:
        print(f"wrote {ROOT / 'docs' / 'compare-page.png'}")
    return result.returncode


if __name__ == "__main__":
    raise SystemExit(main())
