// Starts a real `usersvc serve` for the Node tests, and mints its tokens.

import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, openSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const BIN = process.env.USERSVC_BIN ?? path.join(ROOT, "target/debug/usersvc");

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const withoutSecret = ({ USERSVC_JWT_SECRET, ...rest }) => rest;

/** A server on a free port, with its JSON log in a file of its own. */
export class Usersvc {
  constructor(secret, args = []) {
    this.secret = secret;
    const dir = mkdtempSync(path.join(tmpdir(), "usersvc-node-"));
    this.dir = dir;
    this.logPath = path.join(dir, "server.log");
    this.process = spawn(
      BIN,
      ["serve", "--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--data-dir", dir, "--log-json", ...args],
      {
        // No secret (null): tokens come only from an identity provider's keys.
        env: secret === null
          ? { ...withoutSecret(process.env), RUST_LOG: "info" }
          : { ...process.env, USERSVC_JWT_SECRET: secret, RUST_LOG: "info" },
        stdio: ["ignore", "ignore", openSync(this.logPath, "w")],
      },
    );
  }

  /** Waits until the server says where it listens. */
  async started() {
    for (let i = 0; i < 600 && !this.address; i++) {
      this.address = this.records().map((r) => r.fields?.addr).find(Boolean);
      this.metricsAddress = this.records().map((r) => r.fields?.metrics_addr).find(Boolean);
      if (!this.address) await sleep(50);
    }
    assert.ok(this.address, "usersvc announced its address");
    return this;
  }

  /** The log's JSON records: whole lines only, since the server may be
   * halfway through writing the last one. */
  records() {
    const lines = readFileSync(this.logPath, "utf8").split("\n");
    lines.pop(); // after the last newline: empty, or a line still being written
    return lines.filter((line) => line.startsWith("{")).map((line) => JSON.parse(line));
  }

  token(role) {
    return execFileSync(BIN, ["token", "--sub", `node-${role}`, "--role", role, "--ttl", "10m"], {
      env: { ...process.env, USERSVC_JWT_SECRET: this.secret },
    })
      .toString()
      .trim();
  }

  /** Stops the server, and removes its directory once it has exited. */
  kill() {
    const remove = () => rmSync(this.dir, { recursive: true, force: true });
    if (this.process.exitCode !== null || this.process.signalCode !== null) {
      remove();
    } else {
      this.process.once("exit", remove);
      this.process.kill();
    }
  }
}
