// What an open dashboard costs the server: `ttsd bench` against one `ttsd serve`, alternating phases with
// no page open and with a headless Chromium showing the Metrics tab (closed, open, closed, open, ...),
// and the server's own CPU seconds (process_cpu_seconds_total) over each phase.
//
// Usage: node tests/browser/dashboard-cost.mjs [--binary target/release/ttsd] [--sessions 16]
//        [--seconds 20] [--rounds 2] [--voice espeak-en-us]
import { spawn } from "node:child_process";
import { readFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { createInterface } from "node:readline";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const arg = (name, fallback) => { const at = process.argv.indexOf(name); return at > 0 ? process.argv[at + 1] : fallback; };
const BINARY = resolve(ROOT, arg("--binary", "target/release/ttsd"));
const SESSIONS = arg("--sessions", "16");
const SECONDS = arg("--seconds", "20");
const ROUNDS = Number(arg("--rounds", "2"));
const VOICE = arg("--voice", "espeak-en-us");

function startServer() {
  const child = spawn(BINARY, ["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--voice", VOICE,
    "--max-sessions", "100"], { cwd: ROOT, stdio: ["ignore", "pipe", "ignore"] });
  return new Promise((ok, fail) => {
    child.on("exit", (code) => fail(new Error("ttsd exited with " + code)));
    createInterface({ input: child.stdout }).on("line", (line) => {
      const m = /stream=(ws:\/\/[^/]+)\/v1\/stream admin=(\S+)/.exec(line);
      if (m) ok({ child, stream: m[1], admin: m[2] });
    });
  });
}

async function cpuSeconds(admin) {
  const text = await (await fetch(admin + "/metrics")).text();
  return Number(/^process_cpu_seconds_total (\S+)$/m.exec(text)[1]);
}

function bench(stream, json) {
  return new Promise((ok, fail) => {
    const child = spawn(BINARY, ["bench", "--url", stream, "--voice", VOICE, "--sessions", SESSIONS,
      "--duration-seconds", SECONDS, "--json", json], { cwd: ROOT, stdio: ["ignore", "ignore", "inherit"] });
    child.on("exit", (code) => (code === 0 ? ok(JSON.parse(readFileSync(json, "utf8")).levels[0]) : fail(new Error("bench " + code))));
  });
}

const server = await startServer();
const browser = await chromium.launch({ executablePath: "/usr/bin/chromium",
  args: ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking"] });
const dir = mkdtempSync(join(tmpdir(), "ttsd-dashboard-cost-"));
const rows = [];
try {
  for (let round = 0; round < ROUNDS; round++) {
    for (const open of [false, true]) {
      let page = null;
      if (open) {
        page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
        await page.goto(server.admin + "/dashboard#metrics");
        await page.waitForSelector("#charts canvas");
      }
      const before = await cpuSeconds(server.admin);
      const level = await bench(server.stream, join(dir, `r${round}-${open}.json`));
      const cpu = (await cpuSeconds(server.admin)) - before;
      if (page) await page.close();
      rows.push({ open, level, cpu });
    }
  }
} finally {
  await browser.close();
  server.child.kill("SIGTERM");
}
console.log(`| dashboard | sessions | utterances | first audio p50 / p95 ms | frame interval p99 ms | late frames / frames | underruns | server CPU s (${SECONDS} s) |`);
console.log("| --- | --- | --- | --- | --- | --- | --- | --- |");
for (const { open, level: l, cpu } of rows) {
  console.log(`| ${open ? "open" : "closed"} | ${l.sessions} | ${l.utterances} | ${l.first_audio_ms.p50.toFixed(1)} / ${l.first_audio_ms.p95.toFixed(1)} | ` +
    `${l.frame_interval_ms.p99.toFixed(1)} | ${l.late_frames} / ${l.frames} | ${l.underruns} | ${cpu.toFixed(2)} |`);
}
