// The gRPC interop cases, adapted to UserService, from @grpc/grpc-js with
// proto/user_service.proto loaded at run time by @grpc/proto-loader.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, openSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const BIN = process.env.USERSVC_BIN ?? path.join(ROOT, "target/debug/usersvc");
const SECRET = "node-interop-secret-node-interop-secret!!";
const SERVICE = "/techoral.users.v1.UserService";

const definition = protoLoader.loadSync(path.join(ROOT, "proto/user_service.proto"), {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
});
const pkg = grpc.loadPackageDefinition(definition).techoral.users.v1;

let server, logPath, stub, admin, viewer, address, metricsAddress;

/** The log's JSON records: whole lines only, since the server may be
 * halfway through writing the last one. */
function records() {
  const lines = readFileSync(logPath, "utf8").split("\n");
  lines.pop(); // after the last newline: empty, or a line still being written
  return lines.filter((line) => line.startsWith("{")).map((line) => JSON.parse(line));
}

function token(role) {
  return execFileSync(BIN, ["token", "--sub", "node", "--role", role, "--ttl", "10m"], {
    env: { ...process.env, USERSVC_JWT_SECRET: SECRET },
  })
    .toString()
    .trim();
}

function bearer(value) {
  const md = new grpc.Metadata();
  if (value) md.set("authorization", `Bearer ${value}`);
  return md;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const BULK = 'grpc_method="BulkCreateUsers",grpc_service="techoral.users.v1.UserService",grpc_type="client_stream",protocol="grpc"';

/** The value of one Prometheus series now, 0 before it exists. */
async function metric(series) {
  const text = await (await fetch(`http://${metricsAddress}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line ? Number(line.split(" ").pop()) : 0;
}

/** Waits until `series` reaches `atLeast`: what the server has done, not how
 * long it had. The test's own timeout bounds it. */
async function waitForMetric(series, atLeast) {
  while ((await metric(series)) < atLeast) await sleep(10);
}



let dir;

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), "usersvc-node-"));
  logPath = path.join(dir, "server.log");
  server = spawn(BIN, ["serve", "--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--data-dir", dir, "--store", `sqlite://${dir}/users.db`, "--log-json"], {
    env: { ...process.env, USERSVC_JWT_SECRET: SECRET, RUST_LOG: "info" },
    stdio: ["ignore", "ignore", openSync(logPath, "w")],
  });
  for (let i = 0; i < 600 && !address; i++) {
    address = records().map((r) => r.fields?.addr).find(Boolean);
    metricsAddress = records().map((r) => r.fields?.metrics_addr).find(Boolean);
    if (!address) await sleep(50);
  }
  assert.ok(address, "usersvc announced its address");
  assert.ok(metricsAddress, "usersvc announced its metrics address");
  stub = new pkg.UserService(address, grpc.credentials.createInsecure());
  admin = token("admin");
  viewer = token("viewer");
});

after(() => {
  stub?.close();
  if (server && server.exitCode === null && server.signalCode === null) {
    server.once("exit", () => rmSync(dir, { recursive: true, force: true }));
    server.kill();
  } else if (dir) {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** A unary call as a promise of [error, response, call]. */
function unary(method, request, metadata = new grpc.Metadata(), options = {}) {
  return new Promise((resolve) => {
    const call = stub[method](request, metadata, options, (err, response) => resolve([err, response, call]));
  });
}

/** Every message of a server stream, or the error that ended it. */
function collect(stream) {
  return new Promise((resolve) => {
    const items = [];
    stream.on("data", (item) => items.push(item));
    stream.on("error", (err) => resolve([err, items]));
    stream.on("end", () => resolve([null, items]));
  });
}

/** Buffers a stream's messages and its error, so none is missed between reads. */
class Inbox {
  constructor(stream) {
    this.items = [];
    this.waiters = [];
    stream.on("data", (item) => this.push([null, item]));
    stream.on("error", (err) => this.push([err, null]));
  }
  push(entry) {
    const waiter = this.waiters.shift();
    if (waiter) waiter(entry);
    else this.items.push(entry);
  }
  /** The next [error, message]. */
  next() {
    if (this.items.length) return Promise.resolve(this.items.shift());
    return new Promise((resolve) => this.waiters.push(resolve));
  }
}

let counter = 0;
const unique = (prefix) => `${prefix}${++counter}@example.com`;

async function create(name, extra = {}) {
  const [err, user] = await unary("CreateUser", { name, email: unique(name.toLowerCase()), ...extra }, bearer(admin));
  assert.equal(err, null);
  return user;
}

async function bulk(requests, metadata = bearer(admin)) {
  return new Promise((resolve) => {
    const call = stub.BulkCreateUsers(metadata, (err, response) => resolve([err, response]));
    for (const r of requests) call.write(r);
    call.end();
  });
}

test("empty request", async () => {
  const [err] = await unary("GetUser", {});
  assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
  assert.match(err.details, /user_id/);
  const [listErr] = await collect(stub.ListUsers({ filter_role: "editor", limit: 1 }, bearer(admin)));
  assert.equal(listErr, null);
});

test("large unary", async () => {
  const [err] = await unary("CreateUser", { name: "Big", email: unique("big"), bio: "x".repeat(270_000) }, bearer(admin));
  assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
  assert.match(err.details, /invalid bio/);
  const user = await create("Under", { bio: "é".repeat(2000) });
  assert.equal(user.bio, "é".repeat(2000));
});

test("client streaming", async () => {
  const names = ["s0", "s1", "s2", "s3"];
  const [err, response] = await bulk(names.map((name) => ({ name, email: unique(name) })));
  assert.equal(err, null);
  assert.equal(response.total_count, 4);
  assert.deepEqual(response.users.map((u) => u.name), names);
});

test("server streaming", async () => {
  const names = Array.from({ length: 10 }, (_, i) => `stream${i}`);
  await bulk(names.map((name) => ({ name, email: unique(name), role: "USER_ROLE_ADMIN" })));
  const [, all] = await collect(stub.ListUsers({ filter_role: "admin" }, bearer(admin)));
  const ours = all.filter((u) => u.name.startsWith("stream"));
  assert.deepEqual(ours.map((u) => u.name), names);
  const offset = all.findIndex((u) => u.name === "stream0");
  const [, page] = await collect(stub.ListUsers({ filter_role: "ADMIN", offset: offset + 3, limit: 4 }, bearer(admin)));
  assert.deepEqual(page.map((u) => u.name), names.slice(3, 7));
});

test("ping pong", async () => {
  const ann = await create("Ann");
  const bob = await create("Bob");
  const call = stub.WatchUserEvents(bearer(admin));
  const inbox = new Inbox(call);
  for (const user of [ann, bob]) {
    call.write({ user_id: user.id });
    const [, ack] = await inbox.next();
    assert.deepEqual([ack.event_type, ack.user_id], ["subscribed", user.id]);
    const [updateErr, updated] = await unary("UpdateUser", { user_id: user.id, name: `${user.name}!` }, bearer(admin));
    assert.equal(updateErr, null);
    assert.equal(updated.name, `${user.name}!`);
    const [, event] = await inbox.next();
    assert.deepEqual([event.event_type, event.user_id], ["user_updated", user.id]);
  }
  call.cancel();
});

test("empty stream", async () => {
  const [err, response] = await bulk([]);
  assert.equal(err, null);
  assert.equal(response.total_count, 0);
  assert.deepEqual(response.users, []);
});

test("custom metadata", async () => {
  const user = await create("Meta");
  const md = bearer(admin);
  md.set("x-request-id", "node-7");
  const headers = await new Promise((resolve) => {
    const call = stub.GetUser({ user_id: user.id }, md, () => {});
    call.on("metadata", (m) => resolve(m));
  });
  assert.deepEqual(headers.get("x-request-id"), ["node-7"]);
});

test("status code and message", async () => {
  const special = "\t\r\n☺😈";
  const [err] = await unary("GetUser", { user_id: special });
  assert.equal(err.code, grpc.status.NOT_FOUND);
  assert.equal(err.details, `user ${special} not found`);
});

test("unimplemented method and service", async () => {
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  const call = (p) =>
    new Promise((resolve) =>
      client.makeUnaryRequest(p, (x) => x, (x) => x, Buffer.alloc(0), (err) => resolve(err)),
    );
  assert.equal((await call(`${SERVICE}/NotThere`)).code, grpc.status.UNIMPLEMENTED);
  assert.equal((await call("/techoral.users.v1.NoSuchService/GetUser")).code, grpc.status.UNIMPLEMENTED);
  client.close();
});

async function storedWith(prefix) {
  const [, all] = await collect(stub.ListUsers({}, bearer(admin)));
  return all.filter((u) => u.name.startsWith(prefix)).length;
}

async function storedCount() {
  const [err, all] = await collect(stub.ListUsers({}, bearer(admin)));
  assert.equal(err, null);
  return all.length;
}

test("cancel after begin", async () => {
  // As the interop case: cancel before sending anything. Nothing at all is
  // stored (a prefix of this test's own would match no request).
  const stored = await storedCount();
  const err = await new Promise((resolve) => {
    const call = stub.BulkCreateUsers(bearer(admin), (e) => resolve(e));
    call.cancel();
  });
  assert.equal(err.code, grpc.status.CANCELLED);
  assert.equal(await storedCount(), stored);
});

test("cancel mid-stream is all or nothing, as the server's audit log says", async () => {
  // grpc-js's cancel half-closes the request stream (END_STREAM) before it
  // resets it, so the server may see a complete request of three items and
  // commit it. What must never happen is a part of the batch, or a stored
  // outcome other than the server's audit log records.
  const prefix = `mid${Date.now()}`;
  const bulkAudits = () =>
    records().filter((r) => r.target === "usersvc::audit" && r.fields?.message === "users created in bulk");
  const audited = bulkAudits().length;
  const received = await metric(`grpc_server_msg_received_total{${BULK}}`);
  const err = await new Promise((resolve) => {
    const call = stub.BulkCreateUsers(bearer(admin), (e) => resolve(e));
    for (let i = 0; i < 3; i++) call.write({ name: `${prefix}-${i}`, email: unique(prefix) });
    // The server has read all three items; then the client cancels.
    waitForMetric(`grpc_server_msg_received_total{${BULK}}`, received + 3).then(() => call.cancel());
  });
  assert.equal(err.code, grpc.status.CANCELLED);
  // The server finishes a batch it has read in a task of its own, which a
  // later call does not wait for: read until the outcome settles, the
  // audit log first, since a commit is logged only after it is made.
  let stored, audits;
  for (let i = 0; i < 200; i++) {
    audits = bulkAudits().slice(audited);
    stored = await storedWith(prefix);
    if (stored === 3 && audits.length === 1) break; // committed and audited
    if (stored === 0 && audits.length === 0 && i >= 50) break; // nothing, for half a second
    await sleep(10);
  }
  if (stored === 0) {
    assert.equal(audits.length, 0, "nothing stored, nothing audited");
  } else {
    assert.equal(stored, 3, "never a part of the batch");
    assert.deepEqual(audits.map((r) => r.fields.count), [3], "the commit is audited");
  }
});

test("cancel after first response", async () => {
  const before = records().length;
  const call = stub.WatchUserEvents(bearer(admin));
  const inbox = new Inbox(call);
  call.write({ user_id: "*" });
  const [, ack] = await inbox.next();
  assert.equal(ack.event_type, "subscribed");
  call.cancel();
  const [err] = await inbox.next();
  assert.equal(err.code, grpc.status.CANCELLED);
  let dropped = [];
  for (let i = 0; i < 100 && dropped.length === 0; i++) {
    await sleep(50);
    dropped = records()
      .slice(before)
      .filter((r) => r.fields?.method === `${SERVICE}/WatchUserEvents` && r.fields?.code === "CANCELLED");
  }
  assert.equal(dropped.length, 1, "the server ended the watch");
});

test("timeout on sleeping server", async () => {
  const call = stub.WatchUserEvents(bearer(admin), { deadline: Date.now() + 500 });
  const inbox = new Inbox(call);
  call.write({ user_id: "*" });
  const [, ack] = await inbox.next();
  assert.equal(ack.event_type, "subscribed");
  const [err] = await inbox.next();
  assert.equal(err.code, grpc.status.DEADLINE_EXCEEDED);
});

test("auth on every rpc kind", async () => {
  const user = await create("Guarded");
  const calls = {
    CreateUser: (md) => unary("CreateUser", { name: "X", email: unique("x") }, md).then(([e]) => e),
    ListUsers: (md) => collect(stub.ListUsers({}, md)).then(([e]) => e),
    BulkCreateUsers: (md) => bulk([{ name: "Y", email: unique("y") }], md).then(([e]) => e),
    WatchUserEvents: async (md) => {
      const call = stub.WatchUserEvents(md);
      const inbox = new Inbox(call);
      call.write({ user_id: "*" });
      const [err] = await inbox.next();
      call.cancel();
      return err;
    },
    UpdateUser: (md) => unary("UpdateUser", { user_id: user.id, name: "Z" }, md).then(([e]) => e),
    DeleteUser: (md) => unary("DeleteUser", { user_id: user.id }, md).then(([e]) => e),
  };
  for (const [method, call] of Object.entries(calls)) {
    assert.equal((await call(bearer(null)))?.code, grpc.status.UNAUTHENTICATED, method);
    assert.equal((await call(bearer("not-a-token")))?.code, grpc.status.UNAUTHENTICATED, method);
  }
  for (const method of ["CreateUser", "BulkCreateUsers", "UpdateUser", "DeleteUser"]) {
    assert.equal((await calls[method](bearer(viewer)))?.code, grpc.status.PERMISSION_DENIED, method);
  }
  for (const method of ["ListUsers", "WatchUserEvents"]) {
    assert.equal(await calls[method](bearer(viewer)), null, method);
  }
  const [err, response] = await unary("GetUser", { user_id: user.id });
  assert.equal(err, null);
  assert.equal(response.user.name, "Guarded");
  for (const [method, call] of Object.entries(calls)) {
    assert.equal(await call(bearer(admin)), null, method);
  }
});
