// Every RPC kind from @connectrpc/connect-node, with the schema read at run
// time from proto/user_service.binpb (no generated code), over Connect
// (JSON and binary), gRPC-Web (binary and JSON) and gRPC, on HTTP/1.1 and
// HTTP/2, against a real usersvc.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { createClient, Code, ConnectError } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcWebTransport,
  createGrpcTransport,
} from "@connectrpc/connect-node";
import { createFileRegistry, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { Usersvc, ROOT } from "./usersvc.mjs";

const registry = createFileRegistry(
  fromBinary(FileDescriptorSetSchema, readFileSync(path.join(ROOT, "proto/user_service.binpb"))),
);
const UserService = registry.getService("techoral.users.v1.UserService");
const UserRole = registry.getEnum("techoral.users.v1.UserRole");
const role = (name) => UserRole.values.find((v) => v.name === name).number;

let server, admin, viewer;

before(async () => {
  server = await new Usersvc("connect-node-secret-connect-node-secret!", ["--store", "memory", "--rate-limit", "0"]).started();
  admin = server.token("admin");
  viewer = server.token("viewer");
});

after(() => server?.kill());

const transports = () => {
  const baseUrl = `http://${server.address}`;
  const json = { jsonOptions: { registry } };
  return [
    ["connect json http/1.1", createConnectTransport({ baseUrl, httpVersion: "1.1", ...json })],
    ["connect binary http/1.1", createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true })],
    ["connect json http/2", createConnectTransport({ baseUrl, httpVersion: "2", ...json })],
    ["connect binary http/2", createConnectTransport({ baseUrl, httpVersion: "2", useBinaryFormat: true })],
    ["grpc-web binary http/1.1", createGrpcWebTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true })],
    ["grpc-web json http/1.1", createGrpcWebTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: false, ...json })],
    ["grpc-web binary http/2", createGrpcWebTransport({ baseUrl, httpVersion: "2", useBinaryFormat: true })],
    ["grpc http/2", createGrpcTransport({ baseUrl, httpVersion: "2" })],
  ];
};

/** Runs `check` over every transport, naming the one that fails. */
async function everyProtocol(check, only = () => true) {
  for (const [name, transport] of transports().filter(([name]) => only(name))) {
    try {
      await check(name, createClient(UserService, transport));
    } catch (err) {
      err.message = `${name}: ${err.message}`;
      throw err;
    }
  }
}

const auth = (token) => ({ headers: { authorization: `Bearer ${token}` }, timeoutMs: 20000 });

async function rejected(call) {
  try {
    await call;
  } catch (err) {
    return ConnectError.from(err);
  }
  assert.fail("the call succeeded");
}

test("unary calls, int64, enums and optionals over every protocol", async () => {
  await everyProtocol(async (name, client) => {
    const tag = name.replaceAll(/[^a-z0-9]/g, "");
    const created = await client.createUser(
      { name: `Ann ${name}`, email: `ann-${tag}@example.com`, role: role("USER_ROLE_EDITOR"), bio: "" },
      auth(admin),
    );
    assert.equal(typeof created.createdAt, "bigint", name);
    assert.ok(created.createdAt > 1_600_000_000n, name);
    assert.equal(created.role, role("USER_ROLE_EDITOR"), name);
    assert.equal(created.bio, "", `${name}: a present, empty optional`);

    const plain = await client.createUser({ name: "Bo", email: `bo-${tag}@example.com` }, auth(admin));
    assert.equal(plain.bio, undefined, `${name}: an absent optional`);
    assert.equal(plain.role, role("USER_ROLE_VIEWER"), name);

    const got = await client.getUser({ userId: created.id }, auth(viewer));
    assert.equal(got.user.id, created.id, name);
    assert.equal(got.user.createdAt, created.createdAt, name);

    const updated = await client.updateUser({ userId: plain.id, bio: "hi" }, auth(admin));
    assert.equal(updated.bio, "hi", name);
    const deleted = await client.deleteUser({ userId: plain.id }, auth(admin));
    assert.equal(deleted.user.id, plain.id, name);
  });
});

test("errors and auth refusals keep their codes over every protocol", async () => {
  await everyProtocol(async (name, client) => {
    const invalid = await rejected(client.createUser({ name: "", email: "nope" }, auth(admin)));
    assert.equal(invalid.code, Code.InvalidArgument, `${name}: ${invalid.message}`);
    assert.match(invalid.rawMessage, /email/, name);
    assert.deepEqual(
      invalid.details.map((d) => d.type ?? d.desc?.typeName),
      ["google.rpc.BadRequest"],
      name,
    );

    const missing = await rejected(client.getUser({ userId: "0190c0de-0000-7000-8000-000000000000" }, auth(viewer)));
    assert.equal(missing.code, Code.NotFound, name);

    const anonymous = await rejected(client.createUser({ name: "X", email: "x@example.com" }));
    assert.equal(anonymous.code, Code.Unauthenticated, name);

    const denied = await rejected(client.deleteUser({ userId: "0190c0de-0000-7000-8000-000000000000" }, auth(viewer)));
    assert.equal(denied.code, Code.PermissionDenied, name);
    assert.match(denied.rawMessage, /role/, name);
  });
});

test("server streams: ListUsers and SubscribeUserEvents over every protocol", async () => {
  await everyProtocol(async (name, client) => {
    const listed = [];
    for await (const user of client.listUsers({ limit: 2 }, auth(viewer))) listed.push(user);
    assert.equal(listed.length, 2, name);

    const abort = new AbortController();
    const events = client
      .subscribeUserEvents({ userIds: ["*"] }, { ...auth(viewer), signal: abort.signal })
      [Symbol.asyncIterator]();
    const ack = await events.next();
    assert.equal(ack.value.eventType, "subscribed", name);
    assert.equal(ack.value.userId, "*", name);
    const tag = name.replaceAll(/[^a-z0-9]/g, "");
    const made = await client.createUser({ name: "Ev", email: `ev-${tag}@example.com` }, auth(admin));
    const event = await events.next();
    assert.equal(event.value.eventType, "user_created", name);
    assert.equal(event.value.userId, made.id, name);
    abort.abort();
    await events.return?.();
  });
});

test("client and bidi streams over HTTP/2", async () => {
  await everyProtocol(async (name, client) => {
    const tag = name.replaceAll(/[^a-z0-9]/g, "");
    async function* items() {
      for (let i = 0; i < 3; i++) yield { name: `Bulk ${i}`, email: `bulk${i}-${tag}@example.com` };
    }
    const bulk = await client.bulkCreateUsers(items(), auth(admin));
    assert.equal(bulk.totalCount, 3, name);
    assert.deepEqual(bulk.users.map((u) => u.name), ["Bulk 0", "Bulk 1", "Bulk 2"], name);

    const abort = new AbortController();
    async function* subscriptions() {
      yield { userId: "*" };
      await new Promise((resolve) => abort.signal.addEventListener("abort", resolve));
    }
    const watch = client.watchUserEvents(subscriptions(), { ...auth(viewer), signal: abort.signal })[Symbol.asyncIterator]();
    const ack = await watch.next();
    assert.equal(ack.value.eventType, "subscribed", name);
    const made = await client.createUser({ name: "W", email: `w-${tag}@example.com` }, auth(admin));
    const event = await watch.next();
    assert.equal(event.value.userId, made.id, name);
    abort.abort();
    await watch.return?.();
  }, (name) => name.endsWith("http/2") && !name.startsWith("grpc-web"));
});

test("a bidi stream over HTTP/1.1 gets a clear error, not a hang", async () => {
  const baseUrl = `http://${server.address}`;
  const client = createClient(UserService, createConnectTransport({ baseUrl, httpVersion: "1.1", jsonOptions: { registry } }));
  async function* once() {
    yield { userId: "*" };
  }
  const err = await rejected(
    (async () => {
      for await (const _ of client.watchUserEvents(once(), auth(viewer)));
    })(),
  );
  assert.equal(err.code, Code.Unimplemented, err.message);
});

test("SearchUsers pages with totals, labels and etags over every protocol", async () => {
  await everyProtocol(async (name, client) => {
    const tag = name.replaceAll(/[^a-z0-9]/g, "");
    for (let i = 0; i < 5; i++) {
      await client.createUser(
        { name: `Sought ${i}`, email: `sought${i}-${tag}@search.test`, labels: { team: i % 2 ? "odd" : "even", proto: tag } },
        auth(admin),
      );
    }
    const filter = `labels.proto = "${tag}"`;
    const names = [];
    let pageToken = "";
    let pages = 0;
    do {
      const page = await client.searchUsers({ filter, orderBy: "name desc", pageSize: 2, pageToken }, auth(viewer));
      assert.equal(page.totalSize, 5);
      names.push(...page.users.map((u) => u.name));
      pageToken = page.nextPageToken;
      pages++;
    } while (pageToken);
    assert.equal(pages, 3);
    assert.deepEqual(names, ["Sought 4", "Sought 3", "Sought 2", "Sought 1", "Sought 0"]);

    const first = await client.searchUsers({ filter, pageSize: 2 }, auth(viewer));
    const reused = await rejected(client.searchUsers({ filter: "labels:team", pageSize: 2, pageToken: first.nextPageToken }, auth(viewer)));
    assert.equal(reused.code, Code.InvalidArgument);
    assert.match(reused.rawMessage, /page_token/);

    const user = first.users[0];
    assert.equal(user.labels.proto, tag);
    const changed = await client.updateUser({ userId: user.id, bio: "changed", etag: user.etag }, auth(admin));
    assert.notEqual(changed.etag, user.etag);
    const stale = await rejected(client.updateUser({ userId: user.id, bio: "again", etag: user.etag }, auth(admin)));
    assert.equal(stale.code, Code.Aborted);
    assert.match(stale.rawMessage, /changed since it was read/);
  });
});

test("SearchUsers is a GET on Connect, since it has no side effects", async () => {
  const get = async (message) => {
    const query = new URLSearchParams({ connect: "v1", encoding: "json", message: JSON.stringify(message) });
    return fetch(`http://${server.address}/techoral.users.v1.UserService/SearchUsers?${query}`, {
      headers: { authorization: `Bearer ${viewer}` },
    });
  };
  const ok = await get({ filter: 'email = "*@search.test"', orderBy: "email desc", pageSize: 1 });
  assert.equal(ok.status, 200);
  const page = await ok.json();
  assert.ok(page.totalSize >= 5, JSON.stringify(page));
  assert.equal(page.users.length, 1);
  assert.ok(page.nextPageToken);
  const refused = await get({ filter: "role = " });
  assert.equal(refused.status, 400);
  const error = await refused.json();
  assert.equal(error.code, "invalid_argument");
  assert.match(error.message, /at character 8/);
});

test("a cache lists, watches from the listing's sequence, and resumes after a cut, over every protocol", async () => {
  await everyProtocol(async (name, client) => {
    const tag = name.replaceAll(/[^a-z0-9]/g, "");
    // The listing says which change it reflects, in a response header.
    let listedAt;
    const cache = new Map();
    const listing = client.listUsers({}, { ...auth(viewer), onHeader: (h) => (listedAt = BigInt(h.get("usersvc-sequence"))) });
    for await (const user of listing) cache.set(user.id, user);
    assert.ok(listedAt > 0n, `${name}: ${listedAt}`);
    const first = await client.createUser({ name: "Resume 1", email: `r1-${tag}@example.com` }, auth(admin));

    const apply = (event) => {
      const user = fromBinary(registry.getMessage("techoral.users.v1.User"), event.payload);
      if (event.eventType === "user_deleted") cache.delete(event.userId);
      else cache.set(event.userId, user);
    };
    let abort = new AbortController();
    let events = client
      .subscribeUserEvents({ userIds: ["*"], resumeAfter: listedAt }, { ...auth(viewer), signal: abort.signal })
      [Symbol.asyncIterator]();
    assert.equal((await events.next()).value.eventType, "subscribed", name);
    const replayed = (await events.next()).value;
    assert.equal(replayed.userId, first.id, name);
    assert.ok(replayed.sequence > listedAt, name);
    apply(replayed);
    // The connection is cut; two changes are made meanwhile.
    abort.abort();
    await events.return?.();
    const second = await client.createUser({ name: "Resume 2", email: `r2-${tag}@example.com` }, auth(admin));
    await client.deleteUser({ userId: first.id }, auth(admin));
    abort = new AbortController();
    events = client
      .subscribeUserEvents({ userIds: ["*"], resumeAfter: replayed.sequence }, { ...auth(viewer), signal: abort.signal })
      [Symbol.asyncIterator]();
    assert.equal((await events.next()).value.eventType, "subscribed", name);
    const missed = [(await events.next()).value, (await events.next()).value];
    assert.deepEqual(
      missed.map((e) => [e.eventType, e.userId, e.sequence]),
      [
        ["user_created", second.id, replayed.sequence + 1n],
        ["user_deleted", first.id, replayed.sequence + 2n],
      ],
      name,
    );
    missed.forEach(apply);
    abort.abort();
    await events.return?.();
    // The cache is the directory now.
    const now = [];
    for await (const user of client.listUsers({}, auth(viewer))) now.push(user.id);
    assert.deepEqual([...cache.keys()].sort(), now.sort(), name);

    const old = await rejected(
      (async () => {
        for await (const _ of client.subscribeUserEvents({ userIds: ["*"], resumeAfter: 1n << 62n }, auth(viewer)));
      })(),
    );
    assert.equal(old.code, Code.InvalidArgument, name);
    assert.match(old.rawMessage, /^resume point 4611686018427387904 is ahead of the newest change \d+$/, name);
  });
});
