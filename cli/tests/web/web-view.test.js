// Headless-Chromium test of `starling demo --web`: the page loads, shows the 8 nodes of
// the demo, updates after a publish, and leaves a screenshot at docs/demo-web.png.
//
// Run by scripts/test-all.sh after `cargo build -p starling-cli`:
//   node cli/tests/web/web-view.test.js [path/to/starling]
// Env: STARLING_BIN (the binary), CHROMIUM (default /usr/bin/chromium),
// SCREENSHOT (default docs/demo-web.png; empty: none).
"use strict";
const { spawn } = require("child_process");
const path = require("path");
const { chromium } = require("playwright-core");

const ROOT = path.resolve(__dirname, "..", "..", "..");
const BIN = process.argv[2] || process.env.STARLING_BIN ||
  path.join(process.env.CARGO_TARGET_DIR || path.join(ROOT, "target"), "debug", "starling");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SHOT = process.env.SCREENSHOT ?? path.join(ROOT, "docs", "demo-web.png");
const NODES = 8;
// Whole-test limit: a hung browser or demo fails the run instead of stalling CI.
const LIMIT_MS = 60_000;

function fail(msg) {
  console.error(`web view test FAILED: ${msg}`);
  process.exitCode = 1;
}

async function main() {
  // Port 0: the demo binds a free port and prints the URL on stderr.
  const demo = spawn(BIN, ["demo", "--nodes", String(NODES), "--duration", "30", "--kill", "0",
    "--json", "--web", "127.0.0.1:0"], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  const url = await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no web URL on stderr within 30 s:\n${stderr}`)), 30_000);
    demo.stderr.on("data", d => {
      stderr += d;
      const m = stderr.match(/web view at (http:\/\/\S+)/);
      if (m) { clearTimeout(t); resolve(m[1]); }
    });
    demo.on("exit", code => reject(new Error(`demo exited (${code}) early:\n${stderr}`)));
    demo.on("error", reject);
  });
  console.log(`demo serving ${url}`);
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    // Root in a container: Chromium's sandbox needs user namespaces it may not have.
    args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1180, height: 780 } });
    const errors = [];
    page.on("pageerror", e => errors.push(String(e)));
    await page.goto(url);
    await page.waitForFunction(n =>
      document.getElementById("node-count").textContent === String(n) &&
      document.querySelectorAll("svg g.node.local.alive").length === n, NODES, { timeout: 30_000 });
    console.log(`page shows ${NODES} nodes`);
    // The overlay formed: links drawn and the first node sees everyone online.
    await page.waitForFunction(n => document.querySelectorAll("svg line.link").length >= n - 1 &&
      (document.querySelectorAll("ul.presence-list")[0]?.children.length ?? 0) >= n - 1, NODES, { timeout: 30_000 });
    // Plumtree's eager tree is drawn (solid topic links).
    await page.waitForFunction(() => document.querySelectorAll("svg line.tlink.eager").length > 0,
      null, { timeout: 30_000 });
    // The demo publishes ~10 messages/s: the counters must move on the next pushes.
    const read = () => page.evaluate(() => ({
      published: Number(document.getElementById("published").textContent),
      delivered: Number(document.getElementById("delivered").textContent),
      updates: Number(document.getElementById("updates").textContent),
    }));
    // Let publishing get going, so the screenshot shows traffic.
    await page.waitForFunction(() => Number(document.getElementById("published").textContent) >= 10,
      null, { timeout: 30_000 });
    const before = await read();
    await page.waitForFunction(b =>
      Number(document.getElementById("published").textContent) > b.published &&
      Number(document.getElementById("delivered").textContent) > b.delivered &&
      Number(document.getElementById("updates").textContent) > b.updates, before, { timeout: 15_000 });
    const after = await read();
    console.log(`updated after a publish: published ${before.published} -> ${after.published}, ` +
      `delivered ${before.delivered} -> ${after.delivered}`);
    if (errors.length) throw new Error(`page errors: ${errors.join("; ")}`);
    if (SHOT) {
      await page.screenshot({ path: SHOT });
      console.log(`screenshot: ${path.relative(ROOT, SHOT)}`);
    }
  } finally {
    await browser.close();
    demo.kill("SIGKILL");
  }
}

const timer = setTimeout(() => { fail(`timed out after ${LIMIT_MS} ms`); process.exit(1); }, LIMIT_MS);
main().then(() => { clearTimeout(timer); console.log("web view test passed"); },
  e => { clearTimeout(timer); fail(e.stack || String(e)); process.exit(1); });
