"""Regenerate docs/compare-page.png and docs/jobs-page.png: runs their browser
tests with PAIRLOOP_SCREENSHOT=1 (needs /usr/bin/chromium, DATABASE_URL and REDIS_URL).

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
    tests = [
        "tests/e2e/test_compare_browser.py::test_compare_page_screenshot",
        "tests/e2e/test_jobs_page_browser.py",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", *tests], cwd=ROOT, env=env, check=False
    )
    if result.returncode == 0:
        for name in ("compare-page.png", "jobs-page.png"):
            print(f"wrote {ROOT / 'docs' / name}")
    return result.returncode


if __name__ == "__main__":
    raise SystemExit(main())
