#!/usr/bin/env bash
# Installs what the web UI's browser tests need, when missing: Debian's Chromium and
# ChromeDriver (/usr/bin/chromium, /usr/bin/chromedriver) and the Node packages of
# tests/browser/ (playwright-core, which drives the system Chromium; it never downloads a browser).
#
#   bash scripts/browser-deps.sh
#
# Safe to run again: it does nothing when everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
if ((${#need_apt[@]})); then
    echo "browser-deps: installing ${need_apt[*]} with apt-get" >&2
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

if [ ! -d tests/browser/node_modules/playwright-core ]; then
    echo "browser-deps: installing the Node packages of tests/browser (npm ci)" >&2
    # playwright-core has no install script and downloads no browser.
    (cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
fi

chromium --version
echo "browser-deps: ready (node $(node --version), playwright-core $(node -p "require('./tests/browser/node_modules/playwright-core/package.json').version"))"
