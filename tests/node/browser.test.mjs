// A real browser (Debian's chromium, driven over the DevTools protocol by
// playwright-core): a page served from another origin calls usersvc with
// fetch, speaking Connect JSON, as a web app would. The origin is on
// usersvc's --cors-origin list; a page from an origin that is not is
// refused by the browser.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { chromium } from "playwright-core";
import { Usersvc } from "./usersvc.mjs";

const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";

/** A page server on a free port: the origin the browser calls from. */
async function pageServer() {
  const server = http.createServer((_, res) => {
    res.writeHead(200, { "content-type": "text/html" });
    res.end("<!doctype html><title>usersvc from another origin</title><p>app</p>");
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return server;
}

let usersvc, allowed, unlisted, browser, admin;

before(async () => {
  allowed = await pageServer();
  unlisted = await pageServer();
  const origin = `http://127.0.0.1:${allowed.address().port}`;
  usersvc = await new Usersvc("browser-secret-browser-secret-browser!!", [
    "--store", "memory", "--rate-limit", "0", "--cors-origin", origin,
  ]).started();
  admin = usersvc.token("admin");
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
});

after(async () => {
  await browser?.close();
  usersvc?.kill();
  allowed?.close();
  unlisted?.close();
});

/** Runs the calls a web app makes, in a page from `pageOrigin`. */
async function inPage(pageServer, calls) {
  const page = await browser.newPage();
  try {
    await page.goto(`http://127.0.0.1:${pageServer.address().port}/`);
    return await page.evaluate(calls, { base: `http://${usersvc.address}/techoral.users.v1.UserService`, token: admin });
  } finally {
    await page.close();
  }
}

test("a page from a listed origin creates, reads, fails and streams", async () => {
  const result = await inPage(allowed, async ({ base, token }) => {
    const post = (method, body, headers = {}) =>
      fetch(`${base}/${method}`, {
        method: "POST",
        headers: { "content-type": "application/json", ...headers },
        body: JSON.stringify(body),
      });
    const auth = { authorization: `Bearer ${token}`, "x-request-id": "browser-1" };
    const created = await post("CreateUser", { name: "Browser", email: "browser@example.com", role: "USER_ROLE_EDITOR" }, auth);
    const user = await created.json();
    const got = await (await post("GetUser", { userId: user.id })).json();
    const invalid = await post("CreateUser", { name: "", email: "nope" }, auth);
    const error = await invalid.json();

    // ListUsers as a Connect server stream: enveloped JSON both ways.
    const request = new TextEncoder().encode("{}");
    const framed = new Uint8Array(5 + request.length);
    new DataView(framed.buffer).setUint32(1, request.length);
    framed.set(request, 5);
    const listed = await fetch(`${base}/ListUsers`, {
      method: "POST",
      headers: { "content-type": "application/connect+json", authorization: `Bearer ${token}` },
      body: framed,
    });
    const bytes = new Uint8Array(await listed.arrayBuffer());
    const messages = [];
    for (let at = 0; at < bytes.length; ) {
      const flags = bytes[at];
      const len = new DataView(bytes.buffer, at + 1, 4).getUint32(0);
      messages.push({ flags, json: JSON.parse(new TextDecoder().decode(bytes.slice(at + 5, at + 5 + len))) });
      at += 5 + len;
    }
    return {
      createdStatus: created.status,
      requestId: created.headers.get("x-request-id"),
      user,
      got,
      invalidStatus: invalid.status,
      error,
      messages,
    };
  });
  assert.equal(result.createdStatus, 200);
  assert.equal(result.requestId, "browser-1", "x-request-id is exposed to the page");
  assert.equal(result.user.role, "USER_ROLE_EDITOR");
  assert.equal(typeof result.user.createdAt, "string");
  assert.deepEqual(result.got.user, result.user);
  assert.equal(result.invalidStatus, 400);
  assert.equal(result.error.code, "invalid_argument");
  assert.equal(result.error.details[0].type, "google.rpc.BadRequest");
  assert.deepEqual(result.messages.map((m) => m.flags), [0, 2]);
  assert.equal(result.messages[0].json.email, "browser@example.com");
  assert.equal(result.messages[1].json.error, undefined);
});

test("a page from an origin not on the list is refused by the browser", async () => {
  const result = await inPage(unlisted, async ({ base }) => {
    try {
      await fetch(`${base}/GetUser`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ userId: "x" }),
      });
      return "answered";
    } catch (err) {
      return err.name;
    }
  });
  assert.equal(result, "TypeError", "CORS blocks the call");
});
