// Drives Debian's Chromium (through playwright-core, never a downloaded browser) against a real
// `ttsd serve` under a small load, and checks the live dashboard:
//   every tab renders with data; a live value changes within 2 s; acknowledging an alert in the page
//   changes GET /admin/alerts; every request stays on the admin origin; no console error.
// With --screenshots DIR it also writes one PNG per tab.
//
// Usage: node tests/browser/dashboard.mjs [--binary target/debug/ttsd] [--screenshots docs/img]
import { spawn } from "node:child_process";
import { existsSync, mkdirSync } from "node:fs";
import { createInterface } from "node:readline";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, "../..");
const CHROMIUM = "/usr/bin/chromium";
const VOICE = "espeak-en-us";
const TABS = ["overview", "metrics", "traces", "alerts", "logs"];

function arg(name, fallback) {
  const at = process.argv.indexOf(name);
  return at > 0 ? process.argv[at + 1] : fallback;
}
const BINARY = resolve(ROOT, arg("--binary", "target/debug/ttsd"));
const SHOTS = arg("--screenshots", null);

function fail(message) {
  console.error("dashboard browser test: FAILED: " + message);
  process.exitCode = 1;
  throw new Error(message);
}

const children = [];
function cleanup() {
  for (const child of children) if (child.exitCode === null) child.kill("SIGTERM");
}
process.on("exit", cleanup);

async function loadPlaywright() {
  if (!existsSync(CHROMIUM)) {
    fail(CHROMIUM + " is missing: run scripts/install-deps.sh test (installs Debian's chromium).");
  }
  try {
    return await import("playwright-core");
  } catch (error) {
    fail("playwright-core is not installed in tests/browser/node_modules: run scripts/install-deps.sh test (" +
      error.message + ").");
  }
}

// Starts `ttsd serve` (or `ttsd worker`) on loopback ports and resolves with its announced addresses.
function startServer(command = "serve") {
  if (!existsSync(BINARY)) fail(BINARY + " is missing: build it first (cargo build -p ttsd).");
  const child = spawn(BINARY, [command, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
    "--voice", VOICE, "--threads", "2"], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
  children.push(child);
  const logs = [];
  createInterface({ input: child.stderr }).on("line", (line) => { logs.push(line); if (logs.length > 200) logs.shift(); });
  return new Promise((resolveReady, reject) => {
    const timer = setTimeout(() => reject(new Error("ttsd did not become ready in 60 s:\n" + logs.join("\n"))), 60000);
    createInterface({ input: child.stdout }).on("line", (line) => {
      const match = /^ttsd ready: (?:stream=ws:\/\/([^/]+)\/v1\/stream|grpc=\S+) admin=(http:\/\/\S+)/.exec(line);
      if (match) { clearTimeout(timer); resolveReady({ stream: "ws://" + match[1], admin: match[2], child }); }
    });
    child.on("exit", (code) => reject(new Error("ttsd exited with " + code + ":\n" + logs.join("\n"))));
  });
}

// A few WebSocket sessions for a bounded time, from ttsd's own load generator.
function startLoad(stream, seconds) {
  const child = spawn(BINARY, ["bench", "--url", stream, "--voice", VOICE, "--sessions", "3",
    "--duration-seconds", String(seconds), "--warmup-seconds", "0", "--barge-in-every", "3"],
  { cwd: ROOT, stdio: ["ignore", "ignore", "inherit"] });
  children.push(child);
  return child;
}

async function admin(base, method, path, body) {
  const response = await fetch(base + path, { method, body: body === undefined ? undefined : JSON.stringify(body),
    headers: body === undefined ? {} : { "Content-Type": "application/json" } });
  const text = await response.text();
  if (!response.ok) fail(method + " " + path + " answered " + response.status + ": " + text);
  return text ? JSON.parse(text) : null;
}

async function until(what, check, seconds) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) fail("timed out after " + seconds + " s waiting for " + what);
    await new Promise((r) => setTimeout(r, 250));
  }
}

// Lowers, at run time, the trigger of a rule whose signal is always sampled (the engine queue's depth,
// 0 or more) to 0, so its alert fires.
async function provokeAlert(base) {
  const rules = await admin(base, "GET", "/admin/alerts/thresholds");
  const target = Object.entries(rules).find(([, r]) => r.signal === "pool_queue_depth" && r.direction === "higher_is_worse");
  if (!target) fail("no higher-is-worse threshold rule to lower: " + JSON.stringify(rules));
  const [name] = target;
  await admin(base, "PUT", "/admin/alerts/thresholds", { [name]: { warning: { trigger: 0, clear: -1 }, for_seconds: 0 } });
  return name;
}

async function main() {
  const { chromium } = await loadPlaywright();
  const server = await startServer();
  const base = server.admin;
  const load = startLoad(server.stream, SHOTS ? 90 : 60);
  const browser = await chromium.launch({ executablePath: CHROMIUM,
    args: ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking"] });
  try {
    const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
    const requests = [], errors = [];
    page.on("request", (request) => requests.push(request.url()));
    page.on("console", (message) => { if (message.type() === "error") errors.push("console: " + message.text()); });
    page.on("pageerror", (error) => errors.push("page error: " + error.message));
    await page.goto(base + "/dashboard");

    // Overview: cards with live numbers, and the header's update time moving within 2 s.
    await until("a snapshot on the page", () => page.locator("#ov-cards .card").count(), 15);
    await until("sessions under load", async () => Number(await page.locator("#ov-cards .card .value").first().innerText()) > 0, 30);
    const before = await page.locator("#updated").innerText();
    const t0 = Date.now();
    await until("a live value to change", async () => (await page.locator("#updated").innerText()) !== before, 2);
    console.log("live value changed after " + (Date.now() - t0) + " ms");
    await until("health rows", () => page.locator("#ov-health tr").count().then((n) => n > 1), 5);

    const alertName = await provokeAlert(base);
    const firing = await until("alert " + alertName + " to fire", async () => {
      const alerts = await admin(base, "GET", "/admin/alerts");
      return alerts.active.find((a) => a.rule === alertName && a.state === "firing" && !a.ack);
    }, 30);
    if (SHOTS) await page.waitForTimeout(30000); // let the charts fill for the pictures
    await shoot(page, "overview");

    // Metrics: every chart drawn, and its numbers those of /metrics/summary.
    await page.click('button[data-tab="metrics"]');
    await until("charts", () => page.locator("#charts canvas").count().then((n) => n >= 8), 5);
    const shown = await page.locator("#chart-sessions .now").innerText();
    const summary = await admin(base, "GET", "/metrics/summary");
    if (!/sessions \d/.test(shown)) fail("sessions chart shows " + shown);
    const p95 = Number(/p95 ([\d.]+)/.exec(await page.locator("#chart-first-audio .now").innerText())?.[1]);
    if (!(p95 > 0) || Math.abs(p95 - summary.first_audio_p95_ms) > Math.max(5, 0.2 * summary.first_audio_p95_ms)) {
      fail("first audio p95 on the page " + p95 + " ms, /metrics/summary " + summary.first_audio_p95_ms + " ms");
    }
    if (SHOTS) await page.selectOption("#window", "60"); // the server has run about a minute
    await shoot(page, "metrics");

    // Traces: utterances with their trace ids and stages.
    await page.click('button[data-tab="traces"]');
    await until("utterance timelines", () => page.locator("#traces .trace").count(), 15);
    const meta = await page.locator("#traces .trace .meta").first().innerText();
    if (!/trace [0-9a-f]{32}/.test(meta)) fail("trace id missing: " + meta);
    await until("stage bars", () => page.locator("#traces .trace .bar").count().then((n) => n >= 3), 5);
    await shoot(page, "traces");

    // Alerts: acknowledge the provoked alert in the page; the server records it.
    await page.click('button[data-tab="alerts"]');
    const row = page.locator('#alerts-active tr[data-alert="' + firing.id + '"]');
    await until("the firing alert in the page", () => row.count(), 10);
    await until("thresholds", () => page.locator("#alerts-thresholds tr").count().then((n) => n > 1), 10);
    await row.locator('button[data-act="ack"]').click();
    const acked = await until("the acknowledgement on the server", async () => {
      const alerts = await admin(base, "GET", "/admin/alerts");
      return alerts.active.find((a) => a.id === firing.id && a.ack);
    }, 10);
    if (acked.ack.who !== "dashboard") fail("acknowledged by " + acked.ack.who);
    await until("the page showing it acknowledged", () => row.innerText().then((t) => t.includes("acknowledged")), 10);
    await shoot(page, "alerts");

    // Logs: a live tail, filterable by session.
    await page.click('button[data-tab="logs"]');
    await until("log lines", () => page.locator("#logs .log .lvl").count(), 10);
    await page.selectOption("#log-level", "info");
    await until("log lines at info and above", () => page.locator("#logs .log .lvl").count(), 10);
    await shoot(page, "logs");

    const origin = new URL(base).origin;
    const foreign = requests.filter((url) => new URL(url).origin !== origin);
    if (foreign.length) fail("requests outside " + origin + ": " + foreign.join(", "));
    if (errors.length) fail(errors.join("\n"));
    console.log("dashboard browser test: ok (" + requests.length + " requests, all to " + origin + ")");
    await checkWorkerView(browser);
  } finally {
    await browser.close();
    load.kill("SIGTERM");
    server.child.kill("SIGTERM");
  }
}

// A worker serves its own view of the dashboard on its admin port.
async function checkWorkerView(browser) {
  const worker = await startServer("worker");
  try {
    const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
    const errors = [], foreign = [];
    const origin = new URL(worker.admin).origin;
    page.on("request", (request) => { if (new URL(request.url()).origin !== origin) foreign.push(request.url()); });
    page.on("console", (message) => { if (message.type() === "error") errors.push(message.text()); });
    page.on("pageerror", (error) => errors.push(error.message));
    await page.goto(worker.admin + "/dashboard");
    await until("the worker's view", async () => /^worker /.test(await page.locator("#role").innerText()), 15);
    await until("the worker's cards", () => page.locator("#ov-cards .card").count().then((n) => n >= 6), 5);
    const voices = await page.locator("#ov-fleet").innerText();
    if (!voices.includes(VOICE)) fail("the worker's resident voices do not list " + VOICE + ": " + voices);
    await page.click('button[data-tab="metrics"]');
    await until("the worker's charts", () => page.locator("#charts canvas").count().then((n) => n >= 6), 5);
    if (foreign.length) fail("worker page requests outside " + origin + ": " + foreign.join(", "));
    if (errors.length) fail("worker page: " + errors.join("\n"));
    console.log("dashboard browser test: worker view ok");
  } finally {
    worker.child.kill("SIGTERM");
  }
}

async function shoot(page, tab) {
  if (!SHOTS) return;
  const dir = resolve(ROOT, SHOTS);
  mkdirSync(dir, { recursive: true });
  await page.waitForTimeout(1200);
  await page.screenshot({ path: resolve(dir, "dashboard-" + tab + ".png"), fullPage: tab !== "logs" });
  console.log("wrote " + SHOTS + "/dashboard-" + tab + ".png");
}

main().catch((error) => {
  if (!process.exitCode) console.error("dashboard browser test: FAILED: " + (error.stack || error));
  process.exitCode = 1;
  cleanup();
});
