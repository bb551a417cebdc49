// The console at GET /, driven in headless Chromium as a person would use
// it: paste a token, see and filter the users, create one and see it in
// the list and the live feed, meet a violation at its field, change a
// role, delete as an admin, be refused as a viewer, reload. Screenshots at
// a desktop and a narrow width go to target/console/ as artifacts.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import net from "node:net";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";
import { Usersvc, ROOT } from "./usersvc.mjs";

const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const SHOTS = path.join(ROOT, "target/console");
const SECRET = "console-secret-console-secret-console!!";

let server, browser, admin, viewer, cspViolations;

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  server = await new Usersvc(SECRET, ["--store", "memory", "--rate-limit", "0"]).started();
  admin = server.token("admin");
  viewer = server.token("viewer");
  // Users to look at, made as any client would.
  for (const [name, role] of [["Ada Lovelace", "USER_ROLE_ADMIN"], ["Grace Hopper", "USER_ROLE_EDITOR"], ["Zoë Ångström", "USER_ROLE_VIEWER"]]) {
    const email = `${name.split(" ")[0].toLowerCase().normalize("NFD").replace(/[^a-z]/g, "")}@example.com`;
    const res = await fetch(`http://${server.address}/techoral.users.v1.UserService/CreateUser`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${admin}` },
      body: JSON.stringify({ name, email, role }),
    });
    assert.equal(res.status, 200);
  }
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--ignore-certificate-errors"],
  });
});

after(async () => {
  await browser?.close();
  server?.kill();
});

/** A page on the console, with CSP violations recorded. */
async function open(context, url = `http://${server.address}/`) {
  const page = await context.newPage();
  page.on("console", (message) => {
    if (/Content Security Policy/i.test(message.text())) cspViolations.push(message.text());
  });
  page.on("dialog", (dialog) => dialog.accept());
  await page.goto(url);
  return page;
}

async function useToken(page, value) {
  await page.getByLabel("Token").fill(value);
  await page.getByRole("button", { name: "Use token" }).click();
}

const row = (page, name) => page.locator("#users tbody tr", { hasText: name });

/** The policy console.rs serves and the README promises: scripts, styles
 * and calls from the page's own origin only, nothing inline, no frames. */
const POLICY = {
  "default-src": ["'none'"],
  "script-src": ["'self'"],
  "style-src": ["'self'"],
  "connect-src": ["'self'"],
  "img-src": ["'self'"],
  "base-uri": ["'none'"],
  "form-action": ["'none'"],
  "frame-ancestors": ["'none'"],
};

/** A Content-Security-Policy header as a map from each directive to its
 * sources. A directive named twice fails: a browser keeps only the first. */
function directives(header) {
  assert.ok(header, "a Content-Security-Policy header");
  const map = {};
  for (const part of header.split(";").map((p) => p.trim()).filter(Boolean)) {
    const [name, ...sources] = part.split(/\s+/);
    assert.ok(!Object.hasOwn(map, name.toLowerCase()), `${name} is given once`);
    map[name.toLowerCase()] = sources;
  }
  return map;
}

/** What has the focus: its id, else its accessible name, else its text. */
const focused = (page) =>
  page.evaluate(() => {
    const e = document.activeElement;
    return e === document.body || !e ? "(body)" : e.id || e.getAttribute("aria-label") || e.textContent.trim();
  });

/** Presses Tab (Shift+Tab when back) until `stop` has the focus; fails
 * after `max` presses, naming the stops it passed. */
async function tabTo(page, stop, { back = false, max = 30 } = {}) {
  const passed = [];
  for (let i = 0; i < max; i++) {
    await page.keyboard.press(back ? "Shift+Tab" : "Tab");
    const now = await focused(page);
    if (now === stop) return;
    passed.push(now);
  }
  assert.fail(`${back ? "Shift+Tab" : "Tab"} did not reach ${JSON.stringify(stop)} in ${max} presses: ${passed.join(" > ")}`);
}

/** Waits until the list has not been redrawn for 400 ms, so the focus is
 * not moved out of it by a redraw while a person tabs through it. */
const listSettled = (page) =>
  page.evaluate(
    () =>
      new Promise((resolve) => {
        let timer = setTimeout(done, 400);
        const observer = new MutationObserver(() => {
          clearTimeout(timer);
          timer = setTimeout(done, 400);
        });
        function done() {
          observer.disconnect();
          resolve();
        }
        observer.observe(document.querySelector("#users tbody"), { childList: true, subtree: true });
      }),
  );

/** A user as the server has it, by a Connect unary GetUser. */
async function getUser(id) {
  const res = await fetch(`http://${server.address}/techoral.users.v1.UserService/GetUser`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${admin}` },
    body: JSON.stringify({ userId: id }),
  });
  assert.equal(res.status, 200);
  return (await res.json()).user;
}

/** Labels on every input, and WCAG AA contrast (4.5:1) for every visible
 * piece of text: each element's own text, the value or placeholder shown
 * in an input or textarea, the chosen option of a select, on the first
 * opaque background behind it. Returns what it measured too, so a test can
 * check that what it means to cover was on screen. */
function audit(page) {
  return page.evaluate(() => {
    const unlabelled = [...document.querySelectorAll("input:not([type=hidden]), select, textarea")]
      .filter((e) => e.labels.length === 0 && !e.getAttribute("aria-label"))
      .map((e) => e.id);
    // WCAG relative luminance and contrast of an element's text on the
    // first opaque background behind it.
    const rgb = (text) => {
      if (!/^rgba?\(/.test(text)) throw new Error(`a colour this check cannot read: ${text}`);
      return text.match(/[\d.]+/g).map(Number);
    };
    const luminance = ([r, g, b]) => {
      const c = [r, g, b].map((v) => v / 255).map((v) => (v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4));
      return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
    };
    const background = (e) => {
      for (let n = e; n; n = n.parentElement) {
        const color = getComputedStyle(n).backgroundColor;
        const parts = rgb(color);
        if (parts.length === 3 || parts[3] > 0) return parts.slice(0, 3);
      }
      return [255, 255, 255];
    };
    // The text an element shows, and the colour it is drawn in.
    const shown = (e) => {
      if (e instanceof HTMLSelectElement) return [e.selectedOptions[0]?.text ?? "", getComputedStyle(e).color];
      if (e instanceof HTMLInputElement || e instanceof HTMLTextAreaElement) {
        if (e.value) return [e.type === "password" ? "•".repeat(e.value.length) : e.value, getComputedStyle(e).color];
        return [e.placeholder, getComputedStyle(e, "::placeholder").color];
      }
      const own = [...e.childNodes].filter((n) => n.nodeType === Node.TEXT_NODE).map((n) => n.textContent).join("");
      return [own, getComputedStyle(e).color];
    };
    const low = [];
    const measured = [];
    for (const e of document.body.querySelectorAll("*")) {
      if (e.closest("select") !== e && e.closest("select")) continue; // options: drawn by their select
      if (e instanceof HTMLInputElement && e.type === "hidden") continue;
      if (e.offsetParent === null && getComputedStyle(e).position !== "fixed") continue;
      if (!e.checkVisibility({ opacityProperty: true, visibilityProperty: true })) continue;
      const [text, color] = shown(e);
      if (!text.trim()) continue;
      const [a, b] = [luminance(rgb(color).slice(0, 3)), luminance(background(e))];
      const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
      const name = `${e.tagName.toLowerCase()}${e.id ? `#${e.id}` : ""} "${text.trim().slice(0, 30)}"`;
      measured.push(name);
      if (ratio < 4.5) low.push(`${name}: ${ratio.toFixed(2)}`);
    }
    return { unlabelled, low, measured };
  });
}

test("a person uses the console from token to delete, in a real browser", async () => {
  cspViolations = [];
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const page = await open(context);
  // The whole policy, directive by directive, on the page and its assets:
  // a directive added, dropped or loosened fails. And the headers served
  // with it: no MIME sniffing, no referrer, never framed.
  for (const asset of ["/", "/console.js", "/console.css"]) {
    const served = (await page.request.get(`http://${server.address}${asset}`)).headers();
    assert.deepEqual(directives(served["content-security-policy"]), POLICY, `the CSP of ${asset}`);
    assert.equal(served["x-content-type-options"], "nosniff", asset);
    assert.equal(served["referrer-policy"], "no-referrer", asset);
    assert.equal(served["x-frame-options"], "DENY", asset);
  }

  // An invalid token shows the server's message.
  await useToken(page, "not-a-token");
  await page.getByText(/did not accept the token: invalid token/).waitFor();

  // A valid one shows the users, and the role filter narrows them.
  await useToken(page, admin);
  await page.getByText(/Using the token of node-admin \(admin\)/).waitFor();
  await row(page, "Grace Hopper").waitFor();
  assert.equal(await page.locator("#users tbody tr").count(), 3);
  await page.getByLabel("Role", { exact: true }).first().selectOption("editor");
  await page.getByText("1 user").waitFor();
  assert.deepEqual(await page.locator("#users tbody tr td:first-child").allTextContents(), ["Grace Hopper"]);
  await page.getByLabel("Role", { exact: true }).first().selectOption("");
  await page.getByText("3 users").waitFor();
  await page.getByText("Following every change.").waitFor();

  // Create: the user appears in the list and in the live feed.
  const create = page.locator("#create-form");
  await create.getByLabel("Name").fill("Katherine Johnson");
  await create.getByLabel("Email").fill("katherine@example.com");
  await create.getByLabel("Role").selectOption("USER_ROLE_EDITOR");
  await create.getByRole("button", { name: "Create" }).click();
  await row(page, "Katherine Johnson").waitFor();
  await page.locator("#feed li", { hasText: "Created Katherine Johnson" }).waitFor();

  // An invalid email: the violation is shown at the email field.
  await create.getByLabel("Name").fill("Bad Email");
  await create.getByLabel("Email").fill("not-an-email");
  await create.getByRole("button", { name: "Create" }).click();
  const emailError = page.locator("#create-email-error");
  await emailError.getByText(/email address/).waitFor();
  assert.equal(await create.getByLabel("Email").getAttribute("aria-invalid"), "true");
  assert.equal(await page.locator("#create-name-error").textContent(), "");
  assert.equal(await page.evaluate(() => document.activeElement.id), "create-email");

  // Change a role.
  await row(page, "Katherine Johnson").getByRole("button", { name: "Edit Katherine Johnson" }).click();
  await page.locator("#edit-form").getByLabel("Role").selectOption("USER_ROLE_VIEWER");
  await page.locator("#edit-form").getByRole("button", { name: "Save" }).click();
  await row(page, "Katherine Johnson").locator(".role.viewer").waitFor();
  await page.locator("#feed li", { hasText: "Updated Katherine Johnson" }).waitFor();

  await page.screenshot({ path: path.join(SHOTS, "console-desktop.png"), fullPage: true });

  // Delete as an admin.
  await row(page, "Katherine Johnson").getByRole("button", { name: "Delete Katherine Johnson" }).click();
  await row(page, "Katherine Johnson").waitFor({ state: "detached" });
  await page.locator("#feed li", { hasText: "Deleted Katherine Johnson" }).waitFor();

  // As a viewer, a delete is refused, and the page says why.
  await useToken(page, viewer);
  await page.getByText(/Using the token of node-viewer \(viewer\)/).waitFor();
  await row(page, "Grace Hopper").getByRole("button", { name: "Delete Grace Hopper" }).click();
  await page.getByText(/Not allowed with this token: .*admin/).waitFor();
  await row(page, "Grace Hopper").waitFor();

  // A reload keeps the token for the tab.
  await page.reload();
  assert.equal(await page.getByLabel("Token").inputValue(), viewer);
  await page.getByText(/Using the token of node-viewer/).waitFor();

  assert.deepEqual(cspViolations, [], "the page passes its own CSP");
  await context.close();
});

test("narrow, keyboard-only and accessible", async () => {
  cspViolations = [];
  const context = await browser.newContext({ viewport: { width: 390, height: 844 } });
  const page = await open(context);
  const keys = page.keyboard;
  let seen = await audit(page);
  assert.deepEqual(seen.unlabelled, [], "every input has a label");
  assert.deepEqual(seen.low, [], "text contrast is WCAG AA (4.5:1), before a token");
  for (const what of [/^input#token "paste the output/, /^td "Use a token to see the users/, /^select#role-filter "every role"/]) {
    assert.ok(seen.measured.some((m) => what.test(m)), `the contrast check measured ${what}: ${seen.measured.join(", ")}`);
  }

  // Keyboard only, from here to the end of the edit: no clicks, no fills.
  // The first stops are the skip link, then the token field.
  await keys.press("Tab");
  await keys.press("Tab");
  assert.equal(await focused(page), "token");
  await keys.type(admin);
  await keys.press("Enter");
  await page.getByText(/Using the token of node-admin/).waitFor();
  await row(page, "Ada Lovelace").waitFor();
  await page.getByText("Following every change.").waitFor();
  await listSettled(page);
  await page.screenshot({ path: path.join(SHOTS, "console-narrow.png"), fullPage: true });

  // Create, with a mistake first: the violation is shown at the email
  // field, which gets the focus.
  await tabTo(page, "create-name");
  await keys.type("Dorothy Vaughan");
  await tabTo(page, "create-email", { max: 1 });
  await keys.type("dorothy-at-example");
  await tabTo(page, "create-role", { max: 1 });
  await keys.press("ArrowDown");
  assert.equal(await page.evaluate(() => document.activeElement.value), "USER_ROLE_EDITOR");
  await tabTo(page, "create-bio", { max: 1 });
  await keys.type("Computed trajectories.");
  await tabTo(page, "create-labels", { max: 1 });
  await keys.type("team=west");
  await tabTo(page, "Create", { max: 1 });
  await keys.press("Enter");
  await page.locator("#create-email-error").getByText(/email address/).waitFor();
  assert.equal(await focused(page), "create-email");

  // Labels and contrast, with the error text, the inputs' values, the
  // chosen role and the bio on screen.
  seen = await audit(page);
  assert.deepEqual(seen.low, [], "text contrast is WCAG AA (4.5:1), with a violation shown");
  for (const what of [/^p#create-email-error "/, /^input#create-name "Dorothy Vaughan"/, /^input#create-email "dorothy-at-example"/,
    /^select#create-role "editor"/, /^textarea#create-bio "Computed/, /^input#token "•+/, /^button "Create"/,
    /^label "Email"/, /^td "Ada Lovelace"/, /^span "admin"/]) {
    assert.ok(seen.measured.some((m) => what.test(m)), `the contrast check measured ${what}: ${seen.measured.join(", ")}`);
  }

  // Put the email right and create, pressing Space on the button.
  await keys.press("Control+A");
  await keys.type("dorothy@example.com");
  await tabTo(page, "Create");
  await keys.press(" ");
  await row(page, "Dorothy Vaughan").locator(".role.editor").waitFor();
  await page.locator("#feed li", { hasText: "Created Dorothy Vaughan" }).waitFor();
  const id = await row(page, "Dorothy Vaughan").getAttribute("data-id");
  const created = await getUser(id);
  assert.deepEqual([created.name, created.email, created.role], ["Dorothy Vaughan", "dorothy@example.com", "USER_ROLE_EDITOR"]);
  assert.deepEqual(created.labels, { team: "west" });

  // Edit: back to her Edit button, which opens the form at her name.
  await listSettled(page);
  await tabTo(page, "Edit Dorothy Vaughan", { back: true });
  await keys.press("Enter");
  assert.equal(await focused(page), "edit-name");
  assert.equal(await page.evaluate(() => document.activeElement.value), "Dorothy Vaughan");

  // A bad email at the edit form first: shown at its field.
  await tabTo(page, "edit-email", { max: 1 });
  await keys.press("Control+A");
  await keys.type("nope");
  await tabTo(page, "Save");
  await keys.press("Enter");
  await page.locator("#edit-email-error").getByText(/email address/).waitFor();
  assert.equal(await focused(page), "edit-email");
  seen = await audit(page);
  assert.deepEqual(seen.low, [], "text contrast is WCAG AA (4.5:1), with the edit form open");
  for (const what of [/^p#edit-email-error "/, /^input#edit-email "nope"/, /^select#edit-role "editor"/, /^button "Save"/, /^button#edit-cancel "Cancel"/]) {
    assert.ok(seen.measured.some((m) => what.test(m)), `the contrast check measured ${what}: ${seen.measured.join(", ")}`);
  }

  // Put it back, make her an admin with the arrow keys, and save.
  await keys.press("Control+A");
  await keys.type("dorothy@example.com");
  await tabTo(page, "edit-role", { max: 1 });
  await keys.press("ArrowDown");
  assert.equal(await page.evaluate(() => document.activeElement.value), "USER_ROLE_ADMIN");
  await tabTo(page, "Save");
  await keys.press("Enter");
  await row(page, "Dorothy Vaughan").locator(".role.admin").waitFor();
  await page.locator("#feed li", { hasText: "Updated Dorothy Vaughan" }).waitFor();
  assert.ok(await page.locator("#edit-form").isHidden(), "the edit form closes on save");
  const saved = await getUser(id);
  assert.deepEqual([saved.name, saved.email, saved.role, saved.bio], ["Dorothy Vaughan", "dorothy@example.com", "USER_ROLE_ADMIN", "Computed trajectories."]);

  assert.deepEqual(cspViolations, []);
  await context.close();
});

/** A user changed behind the console's back, as another person would. */
async function updateUser(message) {
  const res = await fetch(`http://${server.address}/techoral.users.v1.UserService/UpdateUser`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${admin}` },
    body: JSON.stringify(message),
  });
  assert.equal(res.status, 200);
  return res.json();
}

test("search, sorted columns, pages, labels, and an edit that never overwrites", async () => {
  cspViolations = [];
  // Enough users for two pages of 20.
  for (let i = 0; i < 23; i++) {
    const res = await fetch(`http://${server.address}/techoral.users.v1.UserService/CreateUser`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${admin}` },
      body: JSON.stringify({ name: `Pager ${String(i).padStart(2, "0")}`, email: `pager${i}@pages.test`, labels: { batch: i % 2 ? "odd" : "even" } }),
    });
    assert.equal(res.status, 200);
  }
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await open(context);
  await useToken(page, admin);
  await page.getByText(/Using the token of node-admin/).waitFor();
  const names = () => page.locator("#users tbody tr td:first-child").allTextContents();

  // Plain words search names and emails.
  await page.getByLabel("Search", { exact: true }).fill("grace");
  await page.getByRole("button", { name: "Search", exact: true }).click();
  await page.getByText("1 user", { exact: true }).waitFor();
  assert.deepEqual(await names(), ["Grace Hopper"]);
  // A filter is taken as it is, and its total shown over the pages.
  await page.getByLabel("Search", { exact: true }).fill('email = "*@pages.test" AND labels.batch = even');
  await page.getByRole("button", { name: "Search", exact: true }).click();
  await page.getByText("12 users").waitFor();
  await row(page, "Pager 22").locator(".label", { hasText: "batch=even" }).waitFor();
  // One that does not parse says where.
  await page.getByLabel("Search", { exact: true }).fill("name = ");
  await page.getByRole("button", { name: "Search", exact: true }).click();
  await page.getByText(/invalid filter: at character 7: expected a value after =/).waitFor();

  // Pages of 20, with the total; sorted by a column header.
  await page.getByLabel("Search", { exact: true }).fill('email = "*@pages.test"');
  await page.getByRole("button", { name: "Search", exact: true }).click();
  await page.getByText("Users 1–20 of 23").waitFor();
  await page.getByRole("button", { name: "Name", exact: true }).click();
  await page.getByText("Users 1–20 of 23").waitFor();
  await page.locator('th[aria-sort="ascending"]', { hasText: "Name" }).waitFor();
  assert.equal((await names())[0], "Pager 00");
  await page.getByRole("button", { name: "Next", exact: true }).click();
  await page.getByText("Users 21–23 of 23").waitFor();
  assert.deepEqual(await names(), ["Pager 20", "Pager 21", "Pager 22"]);
  assert.ok(await page.getByRole("button", { name: "Next", exact: true }).isDisabled());
  await page.getByRole("button", { name: "Previous", exact: true }).click();
  await page.getByText("Users 1–20 of 23").waitFor();
  await page.getByRole("button", { name: "Name", exact: true }).click();
  await page.locator('th[aria-sort="descending"]', { hasText: "Name" }).waitFor();
  await page.getByText("Users 1–20 of 23").waitFor();
  assert.equal((await names())[0], "Pager 22");

  // Labels are edited in the form; the row shows them.
  await row(page, "Pager 22").getByRole("button", { name: "Edit Pager 22" }).click();
  const edit = page.locator("#edit-form");
  assert.equal(await edit.getByLabel("Labels").inputValue(), "batch=even");
  await edit.getByLabel("Labels").fill("team=core\nfloor=3");
  await edit.getByRole("button", { name: "Save" }).click();
  await row(page, "Pager 22").locator(".label", { hasText: "team=core" }).waitFor();
  const id = await row(page, "Pager 22").getAttribute("data-id");
  let stored = await getUser(id);
  assert.deepEqual(stored.labels, { floor: "3", team: "core" });

  // Someone else changes the user while the form is open: the save is
  // refused, the page says so, and offers to reload.
  await listSettled(page);
  await row(page, "Pager 22").getByRole("button", { name: "Edit Pager 22" }).click();
  await edit.getByLabel("Bio").fill("mine");
  await updateUser({ userId: id, bio: "theirs" });
  await edit.getByRole("button", { name: "Save" }).click();
  await page.getByText(/Someone else changed Pager 22 since you opened it; nothing was saved/).waitFor();
  stored = await getUser(id);
  assert.equal(stored.bio, "theirs", "the other change stands");
  await page.getByRole("button", { name: "Reload the user" }).click();
  await page.getByText("Reloaded Pager 22 as it is now.").waitFor();
  assert.equal(await edit.getByLabel("Bio").inputValue(), "theirs");
  await edit.getByLabel("Bio").fill("mine, after reading theirs");
  await edit.getByRole("button", { name: "Save" }).click();
  await page.getByText("Saved Pager 22.").waitFor();
  assert.equal((await getUser(id)).bio, "mine, after reading theirs");

  const seen = await audit(page);
  assert.deepEqual(seen.unlabelled, [], "every input has a label");
  assert.deepEqual(seen.low, [], "text contrast is WCAG AA (4.5:1) with search, sorting and labels on screen");
  await page.screenshot({ path: path.join(SHOTS, "console-search.png"), fullPage: true });
  assert.deepEqual(cspViolations, []);
  await context.close();
});

test("the console over https, and --console=false serves nothing at /", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "usersvc-console-tls-"));
  const [cert, key] = [path.join(dir, "cert.pem"), path.join(dir, "key.pem")];
  execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
    "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost",
    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], { stdio: "ignore" });
  const tls = await new Usersvc(SECRET, ["--store", "memory", "--tls-cert", cert, "--tls-key", key]).started();
  try {
    const context = await browser.newContext();
    const page = await open(context, `https://${tls.address}/`);
    await useToken(page, tls.token("admin"));
    await page.getByText(/Using the token of node-admin/).waitFor();
    await page.getByText("Following every change.").waitFor();
    await context.close();
  } finally {
    tls.kill();
    rmSync(dir, { recursive: true, force: true });
  }

  const off = await new Usersvc(SECRET, ["--store", "memory", "--console=false"]).started();
  try {
    for (const asset of ["/", "/console.js"]) {
      const res = await fetch(`http://${off.address}${asset}`);
      assert.notEqual(res.status, 200, asset);
      assert.doesNotMatch(await res.text(), /usersvc console|useToken/, asset);
    }
  } finally {
    off.kill();
  }
});

/** A TCP proxy to the server that a test can cut: every connection closed,
 * and new ones refused, until it is restored. */
async function cuttableProxy(target) {
  const [host, port] = target.split(":");
  const sockets = new Set();
  let refusing = false;
  const proxy = net.createServer((client) => {
    if (refusing) return client.destroy();
    const upstream = net.connect(Number(port), host);
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on("close", () => sockets.delete(socket));
      socket.on("error", () => {});
    }
    client.pipe(upstream).pipe(client);
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
  });
  await new Promise((resolve) => proxy.listen(0, "127.0.0.1", resolve));
  return {
    address: `127.0.0.1:${proxy.address().port}`,
    cut() {
      refusing = true;
      for (const socket of sockets) socket.destroy();
    },
    restore() {
      refusing = false;
    },
    close() {
      this.cut();
      proxy.close();
    },
  };
}

test("the live feed resumes after its connection is cut, and misses nothing", async () => {
  const proxy = await cuttableProxy(server.address);
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  try {
    const page = await open(context, `http://${proxy.address}/`);
    await useToken(page, admin);
    await page.getByText("Following every change.").waitFor();

    // The connection goes; a change is made while the console cannot hear.
    proxy.cut();
    await page.getByText(/Reconnecting in/).waitFor();
    const res = await fetch(`http://${server.address}/techoral.users.v1.UserService/CreateUser`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${admin}` },
      body: JSON.stringify({ name: "Mary Jackson", email: "mary@away.test" }),
    });
    assert.equal(res.status, 200);
    assert.equal(await page.locator("#feed li", { hasText: "Mary Jackson" }).count(), 0);

    // Back: the feed resumes after the last change it showed, and shows
    // the one it missed, once.
    proxy.restore();
    await page.getByText(/reconnected after change \d+, nothing missed/).waitFor({ timeout: 20000 });
    await page.locator("#feed li", { hasText: "Created Mary Jackson" }).waitFor();
    assert.equal(await page.locator("#feed li", { hasText: "Mary Jackson" }).count(), 1);
    await page.screenshot({ path: path.join(SHOTS, "feed-resumed.png") });
  } finally {
    await context.close();
    proxy.close();
  }
});
