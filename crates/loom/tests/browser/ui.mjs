// End-to-end test of Loom's web UI in headless Chromium, against a running `loom up`.
// Run by crates/loom/tests/it/web.rs, which starts `loom up`, adds the project `demo` and sets:
//   LOOM_URL        the control plane (http://127.0.0.1:PORT)
//   LOOM_ADMIN_KEY  the admin key `loom up` printed
//   LOOM_REPO       the bare repository `demo` uses (the 1,000-bead project uses it too)
//   LOOM_ARTIFACTS  where screenshots go (created)
//   CHROMIUM        the browser (default /usr/bin/chromium)
// Exits non-zero naming every failed check.
import { chromium } from "playwright-core";
import { createRequire } from "node:module";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

const require = createRequire(import.meta.url);
const BASE = process.env.LOOM_URL;
const ADMIN = process.env.LOOM_ADMIN_KEY;
const REPO = process.env.LOOM_REPO;
const OUT = process.env.LOOM_ARTIFACTS;
const EXE = process.env.CHROMIUM || "/usr/bin/chromium";
const AXE = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
const WIDTHS = { desktop: { width: 1280, height: 800 }, phone: { width: 390, height: 844 } };
const failures = [];
const consoleErrors = [];

function check(ok, what) {
  if (ok) console.log(`ok   ${what}`);
  else {
    console.log(`FAIL ${what}`);
    failures.push(what);
  }
}

async function api(method, path, body, key = ADMIN) {
  const res = await fetch(BASE + path, {
    method,
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

async function until(what, ms, fn) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

function watch(page, label) {
  page.on("console", (m) => {
    if (m.type() === "error") consoleErrors.push(`${label}: ${m.text()}`);
  });
  page.on("pageerror", (e) => consoleErrors.push(`${label}: ${e.message}`));
}

async function login(context, key, label) {
  const page = await context.newPage();
  watch(page, label);
  await page.goto(BASE + "/ui/login");
  await page.getByLabel("API key").fill(key);
  await Promise.all([page.waitForURL(/\/ui\/board/), page.getByRole("button", { name: "Log in" }).click()]);
  return page;
}

async function axe(page, label) {
  await page.evaluate(AXE);
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
  const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  for (const v of bad) console.log(`     axe ${label}: ${v.impact} ${v.id}: ${v.help} (${v.nodes.length} nodes)`);
  check(bad.length === 0, `axe: no serious or critical violation on ${label}`);
}

async function main() {
  mkdirSync(OUT, { recursive: true });
  // Set-up through the API: a viewer key, a bead that will block, a paused project of 1,000 beads.
  const viewer = (await api("POST", "/api/v1/keys", { name: "e2e viewer", role: "viewer" })).secret;
  const failing = await api("POST", "/api/v1/beads", {
    project_id: "demo",
    title: "a bead that fails",
    context: { command: "echo cannot build >&2; exit 3" },
  });
  await api("POST", "/api/v1/projects", { id: "bulk", git_repo: REPO });
  await api("POST", "/api/v1/projects/bulk/pause");
  const titles = Array.from({ length: 1000 }, (_, i) => `bulk bead ${i}`);
  for (let i = 0; i < titles.length; i += 50) {
    await Promise.all(
      titles.slice(i, i + 50).map((title, j) =>
        api("POST", "/api/v1/beads", { project_id: "bulk", title, priority: (i + j) % 4, tags: ["load"] }),
      ),
    );
  }

  const browser = await chromium.launch({ executablePath: EXE, headless: true, args: ["--no-sandbox"] });
  try {
    const desktop = await browser.newContext({ viewport: WIDTHS.desktop });
    const page = await login(desktop, ADMIN, "admin");
    check(page.url().endsWith("/ui/board"), "logging in leads to the board");

    // Create a bead in the dialog and watch it cross the board without a reload.
    await page.goto(BASE + "/ui/board?project=demo");
    await page.getByRole("button", { name: "New bead" }).click();
    const dialog = page.locator("#create-dialog");
    check(await dialog.isVisible(), "the create dialog opens");
    check((await page.locator("#live-badge").textContent()).includes("Paused"), "live updates pause while a dialog is open");
    await dialog.getByLabel("Title").fill("made in the browser");
    await dialog.getByLabel("Description (Markdown)").fill("Write **ui.txt**.");
    await dialog.getByLabel(/^Context/).fill("command=echo from-the-ui | tee ui.txt");
    await Promise.all([page.waitForURL(/\/ui\/board\?project=demo/), dialog.getByRole("button", { name: "Create" }).click()]);
    await page.evaluate(() => (window.__sameDocument = true));
    const card = page.locator("li.card", { hasText: "made in the browser" });
    await card.waitFor();
    const id = await card.getAttribute("data-bead");
    await until("the live badge", 10000, async () => (await page.locator("#live-badge").textContent()).includes("Live"));
    const seen = new Set();
    await until(`${id} in the Closed column`, 90000, async () => {
      const col = await page.locator(`li.card[data-bead="${id}"]`).evaluate((el) => el.closest("section").dataset.column).catch(() => null);
      if (col) seen.add(col);
      return col === "closed";
    });
    check(await page.evaluate(() => window.__sameDocument === true), `the bead moved to Closed without a reload (columns seen: ${[...seen].join(", ")})`);
    for (const [name, size] of Object.entries(WIDTHS)) {
      await page.setViewportSize(size);
      await page.screenshot({ path: join(OUT, `board-${name}.png`), fullPage: true });
      await axe(page, `board (${name})`);
    }
    await page.setViewportSize(WIDTHS.desktop);

    // Its detail: output and commits.
    await Promise.all([page.waitForURL(new RegExp(`/ui/beads/${id}$`)), page.locator(`li.card[data-bead="${id}"] a.title`).click()]);
    const output = await page.locator("pre.output").first().textContent();
    check(output.includes("from-the-ui"), "the detail shows the agent's output");
    check((await page.locator("ul.commits li").count()) > 0, "the detail shows the commits");
    check((await page.locator(".markdown strong").textContent()) === "ui.txt", "the description is rendered Markdown");
    for (const [name, size] of Object.entries(WIDTHS)) {
      await page.setViewportSize(size);
      await page.screenshot({ path: join(OUT, `bead-${name}.png`), fullPage: true });
      await axe(page, `bead detail (${name})`);
    }
    await page.setViewportSize(WIDTHS.desktop);

    // The failing bead blocks (one attempt: LOOM_DISPATCH__MAX_ATTEMPTS=1); its reason shows.
    await until("the failing bead to block", 90000, async () => (await api("GET", `/api/v1/beads/${failing.id}`)).status === "blocked");
    const waiter = await api("POST", "/api/v1/beads", { project_id: "demo", title: "waits on the failing one", blocked_by: [failing.id] });
    await page.goto(BASE + "/ui/board?project=demo");
    check(await page.locator(`section[data-column="open"] li.card[data-bead="${waiter.id}"]`).isVisible(), "a bead waiting on a blocked one is Open, not Ready");
    const blockedCard = page.locator(`section[data-column="blocked"] li.card[data-bead="${failing.id}"]`);
    check(await blockedCard.isVisible(), "the failed bead is in the Blocked column");
    check(((await blockedCard.locator(".reason").textContent()) || "").length > 0, "the Blocked card shows its reason");
    await page.goto(BASE + `/ui/beads/${failing.id}`);
    const reason = await page.locator("[data-testid=last-error]").textContent();
    check(reason.includes("Blocked"), `the blocked bead's detail shows why: ${reason.trim()}`);
    check((await page.locator(`svg.graph a.down[href="/ui/beads/${waiter.id}"]`).count()) === 1, "the dependency graph shows the bead waiting downstream");

    // A bulk action from the filtered list: reprioritise the waiting bead.
    await page.goto(BASE + "/ui/list?project=demo&q=" + encodeURIComponent("waits on"));
    check((await page.locator("tbody tr").count()) === 1, "the list's search filters the beads");
    await page.getByLabel(`Select ${waiter.id}`, { exact: true }).check();
    await page.getByLabel("Action", { exact: true }).selectOption("priority");
    await page.getByLabel("Priority", { exact: true }).selectOption("0");
    await Promise.all([page.waitForURL(/\/ui\/list/), page.getByRole("button", { name: "Apply to selected" }).click()]);
    check((await api("GET", `/api/v1/beads/${waiter.id}`)).priority === 0, "the bulk action reprioritised the selected bead");

    // Drag the waiting bead onto Closed: the card's legal Close, without its button.
    await page.goto(BASE + "/ui/board?project=demo");
    await Promise.all([
      page.waitForURL(/\/ui\/board/, { waitUntil: "load" }),
      page.locator(`li.card[data-bead="${waiter.id}"]`).dragTo(page.locator('section[data-column="closed"]')),
    ]);
    await until("the dragged bead to close", 10000, async () => (await api("GET", `/api/v1/beads/${waiter.id}`)).status === "closed");
    check(true, "dragging a card onto Closed closes the bead");

    // Every other view, at both widths, with axe.
    for (const [view, path] of [
      ["list", "/ui/list?project=demo"],
      ["projects", "/ui/projects"],
      ["agents", "/ui/agents"],
      ["events", "/ui/events"],
    ]) {
      await page.goto(BASE + path);
      for (const [name, size] of Object.entries(WIDTHS)) {
        await page.setViewportSize(size);
        await page.screenshot({ path: join(OUT, `${view}-${name}.png`), fullPage: true });
        await axe(page, `${view} (${name})`);
      }
      await page.setViewportSize(WIDTHS.desktop);
    }
    await page.goto(BASE + "/ui/agents");
    check((await page.locator("td.status-online").count()) > 0, "the agents view lists an online agent");

    // The 1,000-bead board: first contentful paint, best of three loads.
    const fcps = [];
    for (let i = 0; i < 3; i++) {
      const p = await desktop.newPage();
      watch(p, "fcp");
      await p.goto(BASE + "/ui/board?project=bulk", { waitUntil: "load" });
      const fcp = await p.evaluate(() => performance.getEntriesByName("first-contentful-paint")[0]?.startTime ?? -1);
      fcps.push(Math.round(fcp));
      if (i === 0) {
        check((await p.locator("li.card").count()) === 1000, "the bulk board shows its 1,000 beads");
        await p.screenshot({ path: join(OUT, "board-1000-desktop.png") });
      }
      await p.close();
    }
    const best = Math.min(...fcps);
    console.log(`FCP of the 1,000-bead board: best ${best} ms (loads: ${fcps.join(", ")} ms)`);
    check(best > 0 && best <= 300, `the 1,000-bead board paints first content within 300 ms (${best} ms)`);

    // A viewer sees no write controls.
    const vctx = await browser.newContext({ viewport: WIDTHS.desktop });
    const vpage = await login(vctx, viewer, "viewer");
    await vpage.goto(BASE + "/ui/board?project=demo");
    check((await vpage.getByRole("button", { name: "New bead" }).count()) === 0, "a viewer sees no New bead button");
    check((await vpage.locator("li.card button").count()) === 0, "a viewer sees no transition buttons on cards");
    await vpage.goto(BASE + `/ui/beads/${id}`);
    check((await vpage.getByRole("button", { name: "Edit" }).count()) === 0, "a viewer sees no Edit button");
    check((await vpage.getByRole("button", { name: /Reopen|Close/ }).count()) === 0, "a viewer sees no Close/Reopen");
    await vpage.goto(BASE + "/ui/projects");
    check((await vpage.getByRole("button", { name: /^(Pause|Resume) (demo|bulk)$/ }).count()) === 0, "a viewer cannot pause projects");
    await vpage.goto(BASE + "/ui/list?project=demo");
    check((await vpage.getByRole("button", { name: "Apply to selected" }).count()) === 0, "a viewer has no bulk actions");

    // The login page itself.
    const lctx = await browser.newContext({ viewport: WIDTHS.desktop });
    const lpage = await lctx.newPage();
    watch(lpage, "login");
    await lpage.goto(BASE + "/ui/login");
    for (const [name, size] of Object.entries(WIDTHS)) {
      await lpage.setViewportSize(size);
      await lpage.screenshot({ path: join(OUT, `login-${name}.png`), fullPage: true });
      await axe(lpage, `login (${name})`);
    }
  } finally {
    await browser.close();
  }
  for (const e of consoleErrors) console.log(`     console: ${e}`);
  check(consoleErrors.length === 0, "no console errors on any page");
  console.log(`screenshots in ${OUT}`);
  if (failures.length) {
    console.log(`${failures.length} check(s) failed:\n  ${failures.join("\n  ")}`);
    process.exit(1);
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
