#!/usr/bin/env bash
# Browser tests drive Debian's chromium through Playwright (never a downloaded
# browser). Install it when missing and we may (root with apt); otherwise the
# browser tests skip and say why.
set -u
if [ -x /usr/bin/chromium ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "[pairloop] installing Debian's chromium for the browser tests" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "[pairloop] could not install chromium; browser tests will be skipped" >&2
else
  echo "[pairloop] /usr/bin/chromium is missing (install Debian's chromium); browser tests will be skipped" >&2
fi
exit 0
