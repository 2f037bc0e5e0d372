// Drives the barista dashboard in headless Chromium, step by step with the Rust test that runs it
// (crates/testing/pipeline-tests/tests/pipeline/dashboard.rs), which places the orders over gRPC.
//
// Protocol, one line each way:
//   this script -> test: `ready <metrics JSON>` once signed in, with the board's metrics;
//   test -> this script: `orders <paid order id> <unpaid order id>` once both are placed;
//   this script -> test: `refused <message>` when starting the unpaid order was refused;
//   this script -> test: `done` when the paid order went through the board and left it;
//   this script -> test: `timing <JSON>` (any time): how long the screen took to follow, printed
//   by the test as figures, never asserted on.
// Anything wrong: a line `failed <reason>` on stdout, a `failure.png` screenshot, exit 1.
//
// Environment: DASHBOARD_URL, BARISTA_TOKEN, STORE, SCREENSHOT_DIR, CHROMIUM (default
// /usr/bin/chromium), STEP_TIMEOUT_MS (how long one step may take; default 30000).

import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) throw new Error(`${name} is not set`);
  return value;
};
const url = env("DASHBOARD_URL");
const token = env("BARISTA_TOKEN");
const store = env("STORE");
const screenshots = env("SCREENSHOT_DIR");
const executablePath = env("CHROMIUM", "/usr/bin/chromium");
const timeout = Number(env("STEP_TIMEOUT_MS", "30000"));

const input = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const say = (line) => process.stdout.write(`${line}\n`);
const card = (id) => `[data-order-id="${id}"]`;

mkdirSync(screenshots, { recursive: true });
const browser = await chromium.launch({
  executablePath,
  headless: true,
  // Sessions here run as root, where Chromium's sandbox cannot start.
  args: ["--no-sandbox"],
});
// A tablet in landscape.
const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
page.setDefaultTimeout(timeout);
let shot = 0;
const screenshot = (name) =>
  page.screenshot({ path: join(screenshots, `${String(++shot).padStart(2, "0")}-${name}.png`), fullPage: true });

const textOf = (selector) => page.locator(selector).innerText();
// Polls an element's text until `predicate` holds (the page changes it as the stream pushes).
const waitForText = async (selector, predicate, what) => {
  const deadline = Date.now() + timeout;
  let last = null;
  for (;;) {
    last = await page.locator(selector).first().textContent({ timeout }).catch(() => null);
    if (last !== null && predicate(last)) return last;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${last})`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
};
const metrics = async () => ({
  orders_today: Number(await textOf("#metric-orders-today")),
  active: Number(await textOf("#metric-active")),
  completed: Number(await textOf("#metric-completed")),
  average_prep: await textOf("#metric-average-prep"),
});

try {
  // Sign in with the keyboard only: type the token, tab to the store, press Enter.
  await page.goto(url);
  await page.locator("#token").waitFor({ state: "visible" });
  await page.keyboard.type(token);
  await page.keyboard.press("Tab");
  await page.keyboard.type(store);
  await page.keyboard.press("Enter");
  await page.locator("#board").waitFor({ state: "visible" });
  await waitForText("#connection", (text) => text === "Live", "the live stream to connect");
  await waitForText("#metric-orders-today", (text) => text !== "–", "the metrics");
  await waitForText("#stock-list", (text) => text.includes("CROISSANT"), "the low-stock warning");
  // The low stock opened a reorder (a purchase order awaiting its delivery): the board lists it.
  await waitForText("#reorder-list", (text) => text.includes("CROISSANT") && text.includes("#1"), "the open reorder");
  const before = await metrics();
  await screenshot("signed-in");
  say(`ready ${JSON.stringify(before)}`);

  const [command, paid, unpaid] = ((await input.next()).value ?? "").split(" ");
  if (command !== "orders") throw new Error(`expected 'orders <paid> <unpaid>', got ${command}`);
  // From the last command's acknowledgement (just before that line) to the cards on screen:
  // relay, Kinesis, projector, the dashboard's poll and the page.
  const placedAt = Date.now();
  const timings = {};

  // Both cards appear in Pending, pushed by the live stream, and the day's count grows.
  await page.locator(`#column-pending ${card(paid)}`).waitFor();
  await page.locator(`#column-pending ${card(unpaid)}`).waitFor();
  timings.placed_to_card_ms = Date.now() - placedAt;
  await waitForText("#metric-orders-today", (text) => Number(text) === before.orders_today + 2, "orders today to grow by 2");
  // The card can appear before the view has the payment (a later commit): wait for all of it.
  const expectedOnPaidCard = ["Latte 12oz", "oat milk", "no sugar", "paid"];
  await waitForText(
    card(paid),
    (text) => expectedOnPaidCard.every((expected) => text.includes(expected)),
    `the paid card's ${expectedOnPaidCard.join(", ")}`,
  );
  if (!(await textOf(card(unpaid))).includes("awaiting payment")) {
    throw new Error("the unpaid card does not say it awaits payment");
  }
  await waitForText(`${card(paid)} .age`, (text) => /^\d+:\d\d$/.test(text), "the card's age timer");
  await screenshot("orders-appear");

  // Keyboard: focus the unpaid order's button and press Enter; the refusal shows on its card.
  await page.locator(`${card(unpaid)} button.advance`).focus();
  await page.keyboard.press("Enter");
  await waitForText(`${card(unpaid)} .error`, (text) => text.length > 0, "the refusal on the unpaid card");
  const refusal = await textOf(`${card(unpaid)} .error`);
  await screenshot("start-refused-unpaid");
  say(`refused ${refusal}`);
  if (!(await page.locator(`#column-pending ${card(unpaid)}`).isVisible())) {
    throw new Error("the refused order left Pending");
  }

  // The paid order, clicked through the kitchen: Preparing, Ready (keyboard: Space), gone.
  let clickedAt = Date.now();
  await page.locator(`${card(paid)} button.advance`).click();
  await page.locator(`#column-preparing ${card(paid)}`).waitFor();
  timings.click_to_preparing_ms = Date.now() - clickedAt;
  await screenshot("preparing");
  await page.locator(`${card(paid)} button.advance`).focus();
  clickedAt = Date.now();
  await page.keyboard.press("Space");
  await page.locator(`#column-ready ${card(paid)}`).waitFor();
  timings.key_to_ready_ms = Date.now() - clickedAt;
  await screenshot("ready");
  clickedAt = Date.now();
  await page.locator(`${card(paid)} button.advance`).click();
  await page.locator(card(paid)).waitFor({ state: "detached" });
  timings.click_to_gone_ms = Date.now() - clickedAt;
  say(`timing ${JSON.stringify(timings)}`);
  await waitForText("#metric-completed", (text) => Number(text) === before.completed + 1, "completed to grow by 1");
  await waitForText("#metric-average-prep", (text) => text !== "–", "an average preparation time");
  await waitForText("#metric-active", (text) => Number(text) === before.active + 1, "one order left active");
  await screenshot("completed-left-the-board");
  // The same board on a tablet held upright: the columns stack.
  await page.setViewportSize({ width: 768, height: 1024 });
  await screenshot("tablet-portrait");
  say("done");
  await browser.close();
  // The open stdin would keep node running.
  process.exit(0);
} catch (error) {
  say(`failed ${String(error.message).split("\n")[0]}`);
  await page.screenshot({ path: join(screenshots, "failure.png"), fullPage: true }).catch(() => {});
  await browser.close();
  process.exit(1);
}
