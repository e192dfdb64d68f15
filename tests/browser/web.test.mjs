// Browser tests of the coercion web UI and HTML report, in Debian's headless Chromium driven
// by playwright-core. Started by coercion/tests/cli_browser.rs, which fills a store with real
// runs, starts a plan in another process and `coercion serve`, and passes everything here
// through environment variables. Screenshots go to $ARTIFACTS.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { pathToFileURL } from "node:url";
import fs from "node:fs";
import { env, launch, newPage as freshPage, shot } from "./common.mjs";

const URL_BASE = env("COERCION_URL");
const CONTROL_URL = env("CONTROL_URL");
const FAILED_ID = env("FAILED_ID");
const HOSTILE_ID = env("HOSTILE_ID");
const LIVE_ID = env("LIVE_ID");
const IDS = env("ALL_IDS").split(",");
const FAILED_TAG = env("FAILED_TAG");
const TOLERATED_ID = env("TOLERATED_ID");
const TOLERATED_TAG = env("TOLERATED_TAG");
const HOSTILE_PLAN = env("HOSTILE_PLAN");
const HOSTILE_ACTION = env("HOSTILE_ACTION");
const HOSTILE_ERROR = env("HOSTILE_ERROR");
const HOSTILE_EXPORT = env("HOSTILE_EXPORT");
const REPORT_HOSTILE = env("REPORT_HOSTILE");
const REPORT_FAILED = env("REPORT_FAILED");
const GATE_URL = env("GATE_URL");
const GATE_ID = env("GATE_ID");
let browser;

before(async () => {
  browser = await launch();
});

after(async () => {
  if (browser) await browser.close();
});

// A fresh page that records what it requested and every console error.
const newPage = (options = {}) => freshPage(browser, options);

// Nothing the hostile names tried to run ran.
async function assertNothingRan(page) {
  const pwned = await page.evaluate(() => window.__pwned);
  assert.equal(pwned, undefined, "no script from a plan ran");
  assert.notEqual(await page.title(), "pwned", "the title was not changed by a plan's script");
}

test("the list page shows every plan with its status", async () => {
  const page = await newPage();
  await page.goto(URL_BASE + "/");
  for (const id of IDS) {
    const row = page.locator(`tr[data-plan="${id}"]`);
    await row.waitFor();
  }
  assert.equal(await page.locator("tr[data-plan]").count(), IDS.length);
  assert.equal(await page.locator(`tr[data-plan="${FAILED_ID}"] .badge`).innerText(), "Failed");
  assert.match(await page.locator(`tr[data-plan="${LIVE_ID}"] .badge`).innerText(), /Running|Completed/);
  // The hostile name is shown as text.
  assert.equal(await page.locator(`tr[data-plan="${HOSTILE_ID}"] td.name a`).innerText(), HOSTILE_PLAN);
  await assertNothingRan(page);
  // Filtering by status.
  await page.selectOption("select[name=status]", "Failed");
  await page.click("form.filters button[type=submit]");
  await page.waitForURL(/status=Failed/);
  assert.equal(await page.locator("tr[data-plan]").count(), 2, "the failed and the hostile plan");
  await page.goto(URL_BASE + "/");
  // Status badges are legible: white text on the status colour.
  for (const badge of await page.locator(".badge").all()) {
    const [fg, bg] = await badge.evaluate((e) => [getComputedStyle(e).color, getComputedStyle(e).backgroundColor]);
    assert.equal(fg, "rgb(255, 255, 255)", `badge text colour (${await badge.innerText()})`);
    assert.notEqual(bg, fg);
  }
  await shot(page, "web-list.png");
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test("a plan running in another process updates without a reload", async () => {
  const page = await newPage();
  await page.goto(`${URL_BASE}/plans/${LIVE_ID}`);
  await page.evaluate(() => { window.__samePage = "yes"; });
  const completed = () => page.locator('#live details.action[data-status="Completed"]').count();
  const before = await completed();
  // Open a sequence the server shows closed? Open the first action, and check it stays open.
  const firstAction = page.locator("#live details.action").first();
  const firstId = await firstAction.getAttribute("data-id");
  await firstAction.locator(":scope > summary").click();
  await page.waitForFunction(() => Number(document.body.dataset.liveUpdates || 0) >= 2, null, { timeout: 20000 });
  await page.waitForFunction(
    (n) => document.querySelectorAll('#live details.action[data-status="Completed"]').length > n,
    before, { timeout: 30000 });
  await shot(page, "web-plan-live-running.png");
  await page.waitForFunction(
    () => document.querySelector("#live .summary h1 .badge")?.textContent === "Completed",
    null, { timeout: 60000 });
  await page.waitForFunction(() => document.getElementById("live-state")?.textContent === "finished", null, { timeout: 10000 });
  assert.equal(await page.evaluate(() => window.__samePage), "yes", "the page was never reloaded");
  assert.ok(Number(await page.evaluate(() => document.body.dataset.liveUpdates)) >= 3, "several live updates arrived");
  assert.equal(await completed(), await page.locator("#live details.action").count(), "every action completed");
  assert.equal(await page.locator(`#live details.action[data-id="${firstId}"]`).evaluate((d) => d.open), true,
    "the action the user opened stayed open across updates");
  await shot(page, "web-plan-live-done.png");
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test("a failed action's error is one click away", async () => {
  const page = await newPage();
  await page.goto(`${URL_BASE}/plans/${FAILED_ID}`);
  assert.match(await page.locator(".failure-report pre").innerText(), new RegExp(FAILED_TAG));
  const failed = page.locator('details.action[data-status="Failed"]');
  assert.equal(await failed.count(), 1);
  const error = failed.locator(".error-message").last();
  assert.equal(await error.isVisible(), false, "closed at first");
  await failed.locator(":scope > summary").click();
  await error.waitFor({ state: "visible" });
  assert.equal(await error.innerText(), `${FAILED_TAG}: scripted failure on attempt 3`);
  assert.equal(await failed.locator("ol.attempts > li").count(), 3, "every attempt is listed");
  await shot(page, "web-plan-failed.png");
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test("a plan that completed with tolerated failures says so, with its error in view", async () => {
  const page = await newPage();
  await page.goto(URL_BASE + "/");
  // In the list: an amber badge with the count, not the green Completed one.
  const listed = page.locator(`tr[data-plan="${TOLERATED_ID}"] .badge`);
  assert.equal(await listed.isVisible(), true);
  assert.equal(await listed.innerText(), "Completed with 1 failed");
  const green = await page.locator(".badge.s-completed").first().evaluate((e) => getComputedStyle(e).backgroundColor);
  const amber = await listed.evaluate((e) => getComputedStyle(e).backgroundColor);
  assert.notEqual(amber, green, "a colour of its own");
  assert.equal(await listed.evaluate((e) => getComputedStyle(e).color), "rgb(255, 255, 255)", "legible");

  // On its page, without a click: the badge, the failure report and the failed action's error.
  await listed.locator("xpath=ancestor::tr").locator("td.name a").click();
  await page.waitForURL(new RegExp(`/plans/${TOLERATED_ID}$`));
  const badge = page.locator(".summary h1 .badge");
  assert.equal(await badge.isVisible(), true);
  assert.equal(await badge.innerText(), "Completed with 1 failed");
  assert.equal(await badge.evaluate((e) => getComputedStyle(e).backgroundColor), amber);
  const report = page.locator(".failure-report pre");
  assert.equal(await report.isVisible(), true);
  assert.match(await report.innerText(), new RegExp(`error: ${TOLERATED_TAG}`));
  const failed = page.locator('#live details.action[data-status="Failed"]');
  assert.equal(await failed.count(), 1);
  const error = failed.locator(".error-message").last();
  assert.equal(await error.isVisible(), true, "the error is in view without a click");
  assert.match(await error.innerText(), new RegExp(`^${TOLERATED_TAG}: `));
  await shot(page, "web-plan-tolerated.png");
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test("hostile names render as text and no script runs", async () => {
  const page = await newPage();
  await page.goto(`${URL_BASE}/plans/${HOSTILE_ID}`);
  assert.equal(await page.locator("h1 .plan-name").innerText(), HOSTILE_PLAN);
  const action = page.locator("details.action").first();
  assert.equal(await action.locator("summary .name").innerText(), HOSTILE_ACTION);
  await action.locator(":scope > summary").click();
  assert.match(await action.locator(".error-message").innerText(), new RegExp(HOSTILE_ERROR.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")));
  assert.equal(await page.locator("script").count(), 1, "only the UI's own script element");
  assert.equal(await page.locator("img").count(), 0, "no element from a name");
  await page.locator("p.descr").first().hover();
  await page.waitForTimeout(300);
  await assertNothingRan(page);
  await shot(page, "web-plan-hostile.png");
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test("uploads: a malformed file gets a clear message, an exported plan renders", async () => {
  const page = await newPage();
  await page.goto(`${URL_BASE}/upload`);
  await page.setInputFiles("#plan-file", {
    name: "broken.json", mimeType: "application/json", buffer: Buffer.from('{"name": "half a plan", "blocks": ['),
  });
  const error = page.locator("#upload-result .notice.error");
  await error.waitFor();
  assert.match(await error.innerText(), /This file is not an exported coercion plan: EOF while parsing/);
  await shot(page, "web-upload-error.png");

  // Dropping an exported (hostile) plan renders it, as text.
  const text = fs.readFileSync(HOSTILE_EXPORT, "utf8");
  const dataTransfer = await page.evaluateHandle((t) => {
    const dt = new DataTransfer();
    dt.items.add(new File([t], "plan.json", { type: "application/json" }));
    return dt;
  }, text);
  await page.dispatchEvent("#dropzone", "drop", { dataTransfer });
  await page.locator("#upload-result .notice.ok").waitFor();
  assert.equal(await page.locator("#upload-result h1 .plan-name").innerText(), HOSTILE_PLAN);
  assert.equal(await page.locator("#upload-result .notice.error").count(), 0);
  await assertNothingRan(page);
  await shot(page, "web-upload-plan.png");
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test("the HTML report renders offline, escaped, with the error one click away", async () => {
  const page = await newPage({ offline: true });
  await page.goto(pathToFileURL(REPORT_HOSTILE).href);
  assert.equal(await page.locator("h1 .plan-name").innerText(), HOSTILE_PLAN);
  assert.equal(await page.locator("script").count(), 0, "no script element at all");
  assert.equal(await page.locator("img").count(), 0);
  await assertNothingRan(page);
  await shot(page, "report-hostile.png");

  await page.goto(pathToFileURL(REPORT_FAILED).href);
  const failed = page.locator('details.action[data-status="Failed"]');
  const error = failed.locator(".error-message").last();
  assert.equal(await error.isVisible(), false);
  await failed.locator(":scope > summary").click();
  await error.waitFor({ state: "visible" });
  assert.equal(await error.innerText(), `${FAILED_TAG}: scripted failure on attempt 3`);
  await shot(page, "report-failed.png");
  const external = page.requests.filter((u) => !u.startsWith("file:"));
  assert.deepEqual(external, [], "the report fetched nothing");
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

// Last: it adds a plan to the store (the retry) that the tests above do not expect.
test("Retry runs a failed plan's failed work as a new plan, linked both ways, once", async () => {
  const page = await newPage();
  // A read-only server offers no Retry button.
  await page.goto(`${URL_BASE}/plans/${FAILED_ID}`);
  await page.locator("section.summary dl.facts").waitFor();
  assert.equal(await page.locator("#retry").count(), 0, "no Retry button on a read-only server");

  await page.goto(`${CONTROL_URL}/plans/${FAILED_ID}`);
  const retry = page.locator("#retry");
  await retry.waitFor();
  await Promise.all([page.waitForURL((u) => u.pathname !== `/plans/${FAILED_ID}`), retry.click()]);
  const notice = page.locator(".notice.error");
  if ((await notice.count()) > 0) assert.fail(`the retry was refused: ${await notice.innerText()}`);
  assert.match(new URL(page.url()).pathname, /^\/plans\/[0-9a-f-]{36}$/, "the answer is the new plan's page");
  const newId = new URL(page.url()).pathname.split("/").pop();
  const facts = await page.locator("section.summary dl.facts").innerText();
  assert.match(
    facts,
    new RegExp(`Retry of\\s+${FAILED_ID}, asked by .*\\(uid \\d+\\), via the web UI for 127\\.0\\.0\\.1:\\d+`),
    "the new plan names the plan it retries and who asked",
  );

  // Back to the failed plan: it links to its retry, and offers no second one.
  await Promise.all([page.waitForURL(`${CONTROL_URL}/plans/${FAILED_ID}`), page.locator("#retry-of").click()]);
  const link = page.locator("#retried-by");
  await link.waitFor();
  assert.match(await link.innerText(), new RegExp(newId));
  assert.equal(await page.locator("#retry").count(), 0, "a plan already retried has no Retry button");
  await shot(page, "web-plan-retried.png");
  assert.deepEqual(page.errors, []);
});

test("a plan waiting at a gate is approved with one click, and the decision is recorded", async () => {
  const page = await newPage();
  await page.goto(`${GATE_URL}/`);
  assert.match(await page.locator(`tr[data-plan="${GATE_ID}"]`).innerText(), /Running, waiting for approval: promote canary/);
  await page.goto(`${GATE_URL}/plans/${GATE_ID}`);
  const gate = page.locator("section.gate");
  await gate.waitFor();
  assert.match(await gate.innerText(), /Waiting for approval: promote canary, since /);
  assert.match(await gate.innerText(), /Promote <the> release to the fleet\?/, "the gate's message, as text");
  assert.match(await page.locator("#waiting-gates").innerText(), /for approval: promote canary, since /);
  await shot(page, "web-plan-gate-waiting.png");

  await gate.locator("input[name=comment]").fill("canary <b>healthy</b>");
  await Promise.all([page.waitForLoadState("load"), gate.locator("button.approve").click()]);
  const refused = page.locator(".notice.error");
  if ((await refused.count()) > 0) assert.fail(`the approval was refused: ${await refused.innerText()}`);
  assert.match(await page.locator(".notice.ok").innerText(), /Approved gate .promote canary.: the plan goes on\./);
  const decisions = page.locator("#decisions");
  await decisions.waitFor();
  const text = await decisions.innerText();
  assert.match(text, /promote canary: approved by .*\(uid \d+\), via the web UI for 127\.0\.0\.1:\d+ at /, "who, through what");
  assert.match(text, /canary <b>healthy<\/b>/, "the comment, as text");
  assert.equal(await page.locator("#decisions b").count(), 0, "the comment's markup is not markup");
  // The plan goes on to the end.
  for (let i = 0; i < 100; i++) {
    await page.goto(`${GATE_URL}/plans/${GATE_ID}`);
    if ((await page.locator("section.summary").innerText()).includes("Completed")) break;
    await page.waitForTimeout(100);
  }
  assert.match(await page.locator("section.summary").innerText(), /Completed/);
  assert.equal(await page.locator("section.gate").count(), 0, "no gate waits any more");
  await shot(page, "web-plan-gate-approved.png");
  assert.deepEqual(page.errors, []);
});
