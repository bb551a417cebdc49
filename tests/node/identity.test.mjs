// Tokens from an identity provider, minted by the `jose` package with keys
// it generates, published as a JWKS by an HTTP server in this test, and
// checked by a real usersvc over Connect and gRPC (@connectrpc/connect-node).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { readFileSync } from "node:fs";
import path from "node:path";
import { createClient, Code, ConnectError } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { createFileRegistry, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { SignJWT, exportJWK, generateKeyPair } from "jose";
import { Usersvc, ROOT } from "./usersvc.mjs";

const registry = createFileRegistry(
  fromBinary(FileDescriptorSetSchema, readFileSync(path.join(ROOT, "proto/user_service.binpb"))),
);
const UserService = registry.getService("techoral.users.v1.UserService");

const ISSUER = "https://idp.test/realms/usersvc";
const AUDIENCE = "usersvc";

// The provider: keys by kid, the ones published, and fetches counted.
const keys = {};
let published = [];
let fetches = 0;
const jwksServer = createServer(async (_request, response) => {
  fetches += 1;
  const body = JSON.stringify({ keys: published.map((kid) => keys[kid].jwk) });
  response.writeHead(200, { "content-type": "application/json" });
  response.end(body);
});

async function addKey(kid, alg) {
  const { publicKey, privateKey } = await generateKeyPair(alg);
  const jwk = { ...(await exportJWK(publicKey)), kid, alg, use: "sig" };
  keys[kid] = { privateKey, jwk, alg };
}

async function mint(kid, claims = {}, { expiresIn = "5m", audience = AUDIENCE } = {}) {
  const { privateKey, alg } = keys[kid];
  return new SignJWT({ role: "admin", ...claims })
    .setProtectedHeader({ alg, kid })
    .setIssuer(ISSUER)
    .setAudience(audience)
    .setSubject(claims.sub ?? `jose-${kid}`)
    .setIssuedAt()
    .setExpirationTime(expiresIn)
    .sign(privateKey);
}

let server;

before(async () => {
  await new Promise((resolve) => jwksServer.listen(0, "127.0.0.1", resolve));
  await addKey("rs", "RS256");
  await addKey("ps", "PS256");
  await addKey("es", "ES256");
  await addKey("ed", "EdDSA");
  await addKey("kc", "RS256");
  await addKey("unpublished", "ES256");
  published = ["rs", "ps", "es", "ed", "kc"];
  const url = `http://127.0.0.1:${jwksServer.address().port}/certs`;
  server = await new Usersvc(null, [
    "--store", "memory", "--rate-limit", "0", "--public-methods=",
    "--jwks-url", url, "--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE,
    "--jwks-refetch-interval", "1h",
    "--role-claim", "realm_access.roles",
    "--role-map", "directory-admin=admin", "--role-map", "directory-reader=viewer",
  ]).started();
});

after(() => {
  server?.kill();
  jwksServer.close();
});

const protocols = () => {
  const baseUrl = `http://${server.address}`;
  return [
    ["connect", createConnectTransport({ baseUrl, httpVersion: "1.1", jsonOptions: { registry } })],
    ["grpc", createGrpcTransport({ baseUrl, httpVersion: "2" })],
  ];
};

const bearer = (token) => ({ headers: { authorization: `Bearer ${token}` } });
const keycloakRoles = (...roles) => ({ realm_access: { roles: ["offline_access", ...roles] } });

/** The error a call ends with, over each protocol. */
async function refusals(token) {
  const seen = [];
  for (const [name, transport] of protocols()) {
    const client = createClient(UserService, transport);
    await assert.rejects(client.getUser({ userId: "0190b7c8-0000-7000-8000-000000000000" }, bearer(token)), (err) => {
      assert.ok(err instanceof ConnectError, `${name}: ${err}`);
      seen.push([name, err.code, err.rawMessage]);
      return true;
    });
  }
  return seen;
}

test("RS256, PS256, ES256 and EdDSA tokens from jose are taken over Connect and gRPC", async () => {
  for (const kid of ["rs", "ps", "es", "ed"]) {
    for (const [name, transport] of protocols()) {
      const client = createClient(UserService, transport);
      const token = await mint(kid, keycloakRoles("directory-admin"));
      const email = `${kid}-${name}@example.com`;
      const created = await client.createUser({ name: `${kid} ${name}`, email }, bearer(token));
      assert.equal(created.email, email, `${kid} over ${name}`);
      const got = await client.getUser({ userId: created.id }, bearer(token));
      assert.equal(got.user.email, email);
    }
  }
});

test("a Keycloak-shaped token's realm roles are mapped, and one with none is refused naming the claim", async () => {
  const reader = await mint("kc", keycloakRoles("directory-reader"));
  for (const [name, transport] of protocols()) {
    const client = createClient(UserService, transport);
    await assert.rejects(client.createUser({ name: "No", email: `no-${name}@example.com` }, bearer(reader)), (err) => {
      assert.equal(err.code, Code.PermissionDenied, name);
      assert.match(err.rawMessage, /role viewer may not call CreateUser/);
      return true;
    });
  }
  for (const [name, code, message] of await refusals(await mint("kc", keycloakRoles("uma_authorization")))) {
    assert.equal(code, Code.PermissionDenied, name);
    assert.match(message, /no role in its claim realm_access\.roles \(looked for directory-admin, directory-reader\)/, name);
  }
});

test("an unknown kid makes one refetch, then is UNAUTHENTICATED", async () => {
  const before = fetches;
  const stranger = await mint("unpublished", keycloakRoles("directory-admin"));
  for (const [name, code, message] of await refusals(stranger)) {
    assert.equal(code, Code.Unauthenticated, name);
    assert.match(message, /unknown key id "unpublished"/, name);
  }
  assert.equal(fetches, before + 1, "one fetch for both calls: the interval is an hour");
});

test("an expired token and one for another audience are UNAUTHENTICATED", async () => {
  const roles = keycloakRoles("directory-admin");
  const expired = await mint("es", roles, { expiresIn: Math.floor(Date.now() / 1000) - 3600 });
  for (const [name, code, message] of await refusals(expired)) {
    assert.equal(code, Code.Unauthenticated, name);
    assert.match(message, /expired/, name);
  }
  const elsewhere = await mint("es", roles, { audience: "another-app" });
  for (const [name, code, message] of await refusals(elsewhere)) {
    assert.equal(code, Code.Unauthenticated, name);
    assert.match(message, /wrong audience/, name);
  }
});
