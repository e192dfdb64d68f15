// What the browser test files share: their settings from the environment, the browser, a
// fresh page that records its errors, and screenshots.
import assert from "node:assert/strict";
import path from "node:path";
import fs from "node:fs";
import { chromium } from "playwright-core";

// The environment variable `name`, which coercion/tests/cli_browser.rs sets.
export const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run these tests through cargo (coercion/tests/cli_browser.rs)`);
  return v;
};

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

// Debian's Chromium, headless.
export function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
}

// A fresh page of `browser` that records what it requested and every console error.
export async function newPage(browser, options = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, ...options });
  const page = await context.newPage();
  page.requests = [];
  page.errors = [];
  page.on("request", (r) => page.requests.push(r.url()));
  page.on("pageerror", (e) => page.errors.push(String(e)));
  return page;
}

// A full-page screenshot in $ARTIFACTS, checked to be a real picture.
export async function shot(page, name) {
  const file = path.join(env("ARTIFACTS"), name);
  await page.screenshot({ path: file, fullPage: true });
  assert.ok(fs.statSync(file).size > 5000, `${name} is a real picture`);
}
