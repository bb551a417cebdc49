// buf, the Buf CLI from npm: `buf curl` calls usersvc over
// Connect, gRPC-Web and gRPC with the schema from the committed descriptor
// set, and `buf breaking` holds the contract to the original one.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { Usersvc, ROOT } from "./usersvc.mjs";

// The binary of @bufbuild/buf for this platform, the package that
// @bufbuild/buf installs: the registry this project installs from serves
// only the Linux ones, so `npm ci` could not check @bufbuild/buf's lock.
const BUF = path.join(ROOT, "tests/node/node_modules/@bufbuild/buf-linux-x64/bin/buf");
const SCHEMA = path.join(ROOT, "proto/user_service.binpb");
const SERVICE = "techoral.users.v1.UserService";

/** Runs buf; its exit code, stdout and stderr. */
async function buf(args) {
  try {
    const { stdout, stderr } = await promisify(execFile)(BUF, args, { timeout: 60000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

let server, admin;

before(async () => {
  server = await new Usersvc("buf-curl-secret-buf-curl-secret-buf-curl!", ["--store", "memory", "--rate-limit", "0"]).started();
  admin = server.token("admin");
});

after(() => server?.kill());

test("buf curl creates and reads users over Connect, gRPC-Web and gRPC", async () => {
  for (const protocol of ["connect", "grpcweb", "grpc"]) {
    const call = (method, message, token) =>
      buf([
        "curl",
        "--schema", SCHEMA,
        "--protocol", protocol,
        "--http2-prior-knowledge",
        ...(token ? ["-H", `authorization: Bearer ${token}`] : []),
        "-d", JSON.stringify(message),
        `http://${server.address}/${SERVICE}/${method}`,
      ]);
    const created = await call("CreateUser", { name: `Buf ${protocol}`, email: `buf-${protocol}@example.com`, role: "USER_ROLE_EDITOR" }, admin);
    assert.equal(created.code, 0, `${protocol}: ${created.stderr}`);
    const user = JSON.parse(created.stdout);
    assert.equal(user.role, "USER_ROLE_EDITOR", protocol);
    assert.equal(typeof user.createdAt, "string", `${protocol}: int64 as a string`);

    const got = await call("GetUser", { userId: user.id });
    assert.equal(got.code, 0, `${protocol}: ${got.stderr}`);
    assert.deepEqual(JSON.parse(got.stdout).user, user, protocol);

    const refused = await call("CreateUser", { name: "X", email: "x@example.com" });
    assert.notEqual(refused.code, 0, protocol);
    assert.match(refused.stderr, /unauthenticated/, protocol);
  }
});

test("buf breaking: the contract stays compatible with the original", async () => {
  const config = path.join(ROOT, "tests/buf/breaking.yaml");
  const original = path.join(ROOT, "tests/buf/original");
  const ok = await buf(["breaking", path.join(ROOT, "proto"), "--against", original, "--config", config]);
  assert.equal(ok.code, 0, ok.stdout + ok.stderr);

  // The check is not vacuous: a renumbered field of the original breaks it.
  const dir = mkdtempSync(path.join(tmpdir(), "usersvc-buf-"));
  const proto = readFileSync(path.join(ROOT, "proto/user_service.proto"), "utf8");
  const renumbered = proto.replace("string email = 3;", "string email = 99;");
  assert.notEqual(renumbered, proto);
  writeFileSync(path.join(dir, "user_service.proto"), renumbered);
  const broken = await buf(["breaking", dir, "--against", original, "--config", config]);
  rmSync(dir, { recursive: true, force: true });
  assert.notEqual(broken.code, 0);
  assert.match(broken.stdout, /email/);
});
