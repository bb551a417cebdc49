// The console at GET /, driven in headless Chromium as a person would use
// it: paste a token, see and filter the users, create one and see it in
// the list and the live feed, meet a violation at its field, change a
// role, delete as an admin, be refused as a viewer, reload. Screenshots at
// a desktop and a narrow width go to target/console/ as artifacts.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync } from "node:fs";
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

test("a person uses the console from token to delete, in a real browser", async () => {
  cspViolations = [];
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const page = await open(context);
  const served = await page.request.get(`http://${server.address}/`);
  assert.match(served.headers()["content-security-policy"], /script-src 'self'/);
  assert.doesNotMatch(served.headers()["content-security-policy"], /unsafe-inline/);

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

  // Keyboard only: the first stops are the skip link, then the token field.
  await page.keyboard.press("Tab");
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.id), "token");
  await page.keyboard.type(admin);
  await page.keyboard.press("Enter");
  await page.getByText(/Using the token of node-admin/).waitFor();
  await row(page, "Ada Lovelace").waitFor();
  await page.screenshot({ path: path.join(SHOTS, "console-narrow.png"), fullPage: true });

  const audit = await page.evaluate(() => {
    const unlabelled = [...document.querySelectorAll("input:not([type=hidden]), select, textarea")]
      .filter((e) => e.labels.length === 0 && !e.getAttribute("aria-label"))
      .map((e) => e.id);
    // WCAG relative luminance and contrast of an element's text on the
    // first opaque background behind it.
    const rgb = (text) => text.match(/[\d.]+/g).map(Number);
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
    const low = [];
    for (const e of document.querySelectorAll("h1, h2, label, button, td, th, p, span, a, li, time")) {
      if (!e.textContent.trim() || e.offsetParent === null) continue;
      const [a, b] = [luminance(rgb(getComputedStyle(e).color).slice(0, 3)), luminance(background(e))];
      const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
      if (ratio < 4.5) low.push(`${e.tagName} "${e.textContent.trim().slice(0, 30)}": ${ratio.toFixed(2)}`);
    }
    return { unlabelled, low };
  });
  assert.deepEqual(audit.unlabelled, [], "every input has a label");
  assert.deepEqual(audit.low, [], "text contrast is WCAG AA (4.5:1)");
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
