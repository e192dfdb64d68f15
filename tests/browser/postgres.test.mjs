// The web UI over PostgreSQL in Debian's headless Chromium: a plan that another process runs is
// paused and resumed from its page. Started by coercion/tests/cli_browser.rs
// (`the_web_ui_pauses_a_plan_another_process_runs_on_postgresql`), which runs the plan and
// `coercion serve --db postgres://… --allow-control`.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { env, launch, newPage, shot } from "./common.mjs";

const URL_BASE = env("COERCION_URL");
const PLAN_ID = env("PLAN_ID");

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  if (browser) await browser.close();
});

const completed = (page) => page.locator('#live details.action[data-status="Completed"]').count();
const badge = (page) => page.locator("#live .summary h1 .badge.paused").count();

test("a plan another process runs on PostgreSQL is paused and resumed from its page", async () => {
  const page = await newPage(browser);
  await page.goto(`${URL_BASE}/plans/${PLAN_ID}`);
  // Running, and updating live (fed by the database's notices): more actions complete
  // without a reload.
  const first = await completed(page);
  await page.waitForFunction(
    (n) => document.querySelectorAll('#live details.action[data-status="Completed"]').length > n,
    first, { timeout: 20000 });
  assert.equal(await badge(page), 0, "not paused yet");

  // Pause: the request goes through the database to the process that runs the plan.
  await Promise.all([
    page.waitForURL((u) => u.pathname.endsWith("/pause")),
    page.locator('form[action$="/pause"] button').click(),
  ]);
  const refused = page.locator(".notice.error");
  if ((await refused.count()) > 0) assert.fail(`the pause was refused: ${await refused.innerText()}`);
  assert.match(await page.locator(".notice.ok").innerText(), /pause/i);
  await page.goto(`${URL_BASE}/plans/${PLAN_ID}`);
  await page.waitForFunction(() => document.querySelector("#live .summary h1 .badge.paused") !== null, null, { timeout: 20000 });
  assert.equal(await page.locator('form[action$="/resume"] button').count(), 1, "a Resume button instead");
  // Paused: the action that ran when the pause came may end, then nothing more starts.
  await page.waitForTimeout(1500);
  const held = await completed(page);
  await page.waitForTimeout(2000);
  assert.equal(await completed(page), held, "no action ended while paused");
  assert.ok(held < 200, "the plan was paused before its end");
  await shot(page, "web-pg-paused.png");

  // Resume: it goes on, live.
  await Promise.all([
    page.waitForURL((u) => u.pathname.endsWith("/resume")),
    page.locator('form[action$="/resume"] button').click(),
  ]);
  if ((await refused.count()) > 0) assert.fail(`the resume was refused: ${await refused.innerText()}`);
  assert.match(await page.locator(".notice.ok").innerText(), /resume/i);
  await page.goto(`${URL_BASE}/plans/${PLAN_ID}`);
  await page.waitForFunction(() => document.querySelector("#live .summary h1 .badge.paused") === null, null, { timeout: 20000 });
  await page.waitForFunction(
    (n) => document.querySelectorAll('#live details.action[data-status="Completed"]').length > n,
    held, { timeout: 20000 });
  await shot(page, "web-pg-resumed.png");
  assert.deepEqual(page.errors, []);
  await page.context().close();
});
