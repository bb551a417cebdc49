// The usersvc console: the user directory in a browser. Plain JS, no build
// step; it speaks Connect JSON to the server that served it, with the
// token a person pastes, kept in sessionStorage for the tab.
"use strict";

const SERVICE = "/techoral.users.v1.UserService/";
const TOKEN_KEY = "usersvc.token";
const $ = (id) => document.getElementById(id);

let token = sessionStorage.getItem(TOKEN_KEY) || "";
let following = null; // the AbortController of the live feed
let users = new Map(); // id -> user, as listed
const PAGE_SIZE = 20;
// The search on screen: its filter and order, the tokens of the pages
// before this one (for Previous), and this page's.
const view = { filter: "", orderBy: "", tokens: [], token: "", next: "" };

/** A failed call: its Connect code, message and field violations. */
class RpcError extends Error {
  constructor(error) {
    super(error.message || error.code || "unknown error");
    this.code = error.code || "unknown";
    this.violations = violationsOf(error.details || []);
  }
}

function headers(contentType) {
  const h = { "content-type": contentType };
  if (token) h.authorization = `Bearer ${token}`;
  return h;
}

/** A unary call, Connect JSON. */
async function call(method, message) {
  const res = await fetch(SERVICE + method, {
    method: "POST",
    headers: headers("application/json"),
    body: JSON.stringify(message),
  });
  const body = await res.json().catch(() => ({ code: "unknown", message: `HTTP ${res.status}` }));
  if (!res.ok) throw new RpcError(body);
  return body;
}

/** A server stream, Connect JSON: yields each message; throws the error
 * the end of the stream carries. */
async function* stream(method, message, signal) {
  const json = new TextEncoder().encode(JSON.stringify(message));
  const body = new Uint8Array(5 + json.length);
  new DataView(body.buffer).setUint32(1, json.length);
  body.set(json, 5);
  const res = await fetch(SERVICE + method, {
    method: "POST",
    headers: headers("application/connect+json"),
    body,
    signal,
  });
  if (!res.ok) throw new RpcError({ code: "unknown", message: `HTTP ${res.status}` });
  const reader = res.body.getReader();
  let buffer = new Uint8Array(0);
  for (;;) {
    while (buffer.length >= 5) {
      const length = new DataView(buffer.buffer, buffer.byteOffset, 5).getUint32(1);
      if (buffer.length < 5 + length) break;
      const flags = buffer[0];
      const data = JSON.parse(new TextDecoder().decode(buffer.subarray(5, 5 + length)));
      buffer = buffer.slice(5 + length);
      if (flags & 2) {
        if (data.error) throw new RpcError(data.error);
        return;
      }
      yield data;
    }
    const { value, done } = await reader.read();
    if (done) throw new RpcError({ code: "unavailable", message: "the stream ended early" });
    const joined = new Uint8Array(buffer.length + value.length);
    joined.set(buffer);
    joined.set(value, buffer.length);
    buffer = joined;
  }
}

// ---- Protobuf, just enough to read error details and event payloads ----

function protoFields(bytes) {
  const out = [];
  let i = 0;
  const varint = () => {
    let value = 0n;
    let shift = 0n;
    for (;;) {
      const byte = bytes[i++];
      value |= BigInt(byte & 0x7f) << shift;
      if (!(byte & 0x80)) return value;
      shift += 7n;
    }
  };
  while (i < bytes.length) {
    const key = Number(varint());
    const [number, wire] = [key >> 3, key & 7];
    if (wire === 0) out.push([number, varint()]);
    else if (wire === 2) {
      const length = Number(varint());
      out.push([number, bytes.subarray(i, i + length)]);
      i += length;
    } else if (wire === 1) i += 8;
    else if (wire === 5) i += 4;
    else break;
  }
  return out;
}

const utf8 = (bytes) => new TextDecoder().decode(bytes);
const fromBase64 = (text) => Uint8Array.from(atob(text.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));

/** The field violations of a google.rpc.BadRequest detail. */
function violationsOf(details) {
  const violations = [];
  for (const detail of details) {
    if (detail.type !== "google.rpc.BadRequest") continue;
    for (const [number, violation] of protoFields(fromBase64(detail.value))) {
      if (number !== 1) continue;
      const v = { field: "", description: "" };
      for (const [n, value] of protoFields(violation)) {
        if (n === 1) v.field = utf8(value);
        if (n === 2) v.description = utf8(value);
      }
      violations.push(v);
    }
  }
  return violations;
}

const ROLES = { 1: "admin", 2: "editor", 3: "viewer" };

/** A User from its encoded bytes (an event's payload). */
function userOf(bytes) {
  const user = { id: "", name: "", email: "", role: "", createdAt: "0", labels: {} };
  for (const [number, value] of protoFields(bytes)) {
    if (number === 1) user.id = utf8(value);
    if (number === 2) user.name = utf8(value);
    if (number === 3) user.email = utf8(value);
    if (number === 4) user.role = ROLES[Number(value)] || "";
    if (number === 5) user.createdAt = String(value);
    if (number === 6) user.bio = utf8(value);
    if (number === 8) user.etag = utf8(value);
    if (number === 9) {
      let key = "";
      let text = "";
      for (const [n, part] of protoFields(value)) {
        if (n === 1) key = utf8(part);
        if (n === 2) text = utf8(part);
      }
      user.labels[key] = text;
    }
  }
  return user;
}

/** Labels as a person types them: one key=value a line. The key is
 * trimmed; the value is kept as typed, spaces and all. */
function parseLabels(text) {
  const labels = {};
  for (const line of text.split("\n").map((l) => l.replace(/\r$/, "")).filter((l) => l.trim())) {
    const at = line.indexOf("=");
    if (at < 1 || !line.slice(0, at).trim()) throw new Error(`"${line.trim()}" is not key=value`);
    labels[line.slice(0, at).trim()] = line.slice(at + 1);
  }
  return labels;
}

const labelsText = (labels) =>
  Object.entries(labels || {})
    .map(([key, value]) => `${key}=${value}`)
    .join("\n");

/** What the search box holds, as a filter: a filter expression as it is;
 * plain words as "each word in the name or the email". */
function filterOf(text) {
  const trimmed = text.trim();
  if (!trimmed) return "";
  if (/[=:<>()"]|\b(AND|OR|NOT)\b/.test(trimmed)) return trimmed;
  return trimmed
    .split(/\s+/)
    .map((word) => `(name:${JSON.stringify(word)} OR email:${JSON.stringify(word)})`)
    .join(" AND ");
}

// ---- What a person sees ----

const roleName = (role) => String(role || "USER_ROLE_VIEWER").replace("USER_ROLE_", "").toLowerCase();

/** Words for a failed call, in terms of what the person did. */
function explain(err) {
  switch (err.code) {
    case "unauthenticated":
      return `The server did not accept the token: ${err.message}`;
    case "permission_denied":
      return `Not allowed with this token: ${err.message}. Ask for a token with a higher role.`;
    case "resource_exhausted":
      return `Too much at once: ${err.message}`;
    case "unavailable":
      return `The server is unavailable: ${err.message}`;
    case "aborted":
      return `Someone else changed this user since you opened it: ${err.message}`;
    default:
      return err.message;
  }
}

function say(id, text, kind = "") {
  const element = $(id);
  element.textContent = text;
  element.className = `status ${kind}`.trim();
}

/** The token's subject and role, read from its payload for display. */
function whoami(jwt) {
  try {
    const claims = JSON.parse(utf8(fromBase64(jwt.split(".")[1])));
    return `${claims.sub} (${claims.role})`;
  } catch {
    return "an unreadable token";
  }
}

function formatTime(seconds) {
  const ms = Number(seconds) * (Number(seconds) > 1e12 ? 1 : 1000);
  return new Date(ms).toLocaleString();
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.append(td);
  return td;
}

function renderUsers() {
  const body = $("users").tBodies[0];
  body.replaceChildren();
  if (users.size === 0) {
    const row = body.insertRow();
    const td = cell(row, token ? "No users match." : "Use a token to see the users.");
    td.colSpan = 6;
    td.className = "empty";
    return;
  }
  for (const user of users.values()) {
    const row = body.insertRow();
    row.dataset.id = user.id;
    cell(row, user.name);
    cell(row, user.email);
    const role = document.createElement("span");
    role.className = `role ${roleName(user.role)}`;
    role.textContent = roleName(user.role);
    cell(row, "").append(role);
    cell(row, formatTime(user.createdAt));
    const labels = cell(row, "");
    labels.className = "labels";
    for (const [key, value] of Object.entries(user.labels || {})) {
      const label = document.createElement("span");
      label.className = "label";
      label.textContent = `${key}=${value}`;
      labels.append(label);
    }
    const actions = cell(row, "");
    actions.className = "actions";
    const edit = document.createElement("button");
    edit.type = "button";
    edit.className = "secondary";
    edit.textContent = "Edit";
    edit.setAttribute("aria-label", `Edit ${user.name}`);
    edit.addEventListener("click", () => startEdit(user));
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "danger";
    remove.textContent = "Delete";
    remove.setAttribute("aria-label", `Delete ${user.name}`);
    remove.addEventListener("click", () => deleteUser(user));
    actions.append(edit, remove);
  }
}

/** The filter of the search box and the role chosen, together. */
function currentFilter() {
  const role = $("role-filter").value;
  const typed = filterOf($("search").value);
  if (role && typed) return `role = ${role} AND (${typed})`;
  return role ? `role = ${role}` : typed;
}

let loads = 0; // numbers each load, so that only the newest is shown

/** Loads the page `view` points at, with the total of every match. */
async function loadUsers() {
  if (!token) {
    users = new Map();
    renderUsers();
    return;
  }
  const load = ++loads;
  say("list-status", "Loading…");
  $("previous").disabled = true;
  $("next").disabled = true;
  try {
    const page = await call("SearchUsers", {
      filter: view.filter,
      orderBy: view.orderBy,
      pageSize: PAGE_SIZE,
      pageToken: view.token,
    });
    // A newer search or page was asked for meanwhile: it shows, not this.
    if (load !== loads) return;
    users = new Map((page.users || []).map((user) => [user.id, user]));
    view.next = page.nextPageToken || "";
    renderUsers();
    const total = page.totalSize || 0;
    const first = view.tokens.length * PAGE_SIZE;
    say(
      "list-status",
      view.tokens.length === 0 && !view.next
        ? `${total} user${total === 1 ? "" : "s"}`
        : `Users ${Math.min(first + 1, total)}–${first + users.size} of ${total}`,
    );
  } catch (err) {
    if (load !== loads) return;
    users = new Map();
    view.next = "";
    renderUsers();
    say("list-status", explain(err), "bad");
  }
  $("previous").disabled = view.tokens.length === 0;
  $("next").disabled = !view.next;
  for (const th of document.querySelectorAll("#users th.sortable")) {
    const [field, direction] = view.orderBy.split(" ");
    // The arrow is for the eye; aria-sort says the same to a screen reader,
    // and the button keeps its name.
    let arrow = th.querySelector(".arrow");
    if (!arrow) {
      arrow = document.createElement("span");
      arrow.className = "arrow";
      arrow.setAttribute("aria-hidden", "true");
      th.append(arrow);
    }
    if (field === th.dataset.sort) {
      th.setAttribute("aria-sort", direction === "desc" ? "descending" : "ascending");
      arrow.textContent = direction === "desc" ? " ▼" : " ▲";
    } else {
      th.removeAttribute("aria-sort");
      arrow.textContent = "";
    }
  }
}

/** A new search from the first page: on a new filter, role or order. */
function search(event) {
  event?.preventDefault();
  view.filter = currentFilter();
  view.tokens = [];
  view.token = "";
  loadUsers();
}

/** Sorts by a column: ascending first, then descending on a second click. */
function sortBy(field) {
  view.orderBy = view.orderBy === field ? `${field} desc` : field;
  search();
}

function nextPage() {
  if (!view.next) return;
  view.tokens.push(view.token);
  view.token = view.next;
  view.next = ""; // a second click before the page comes goes nowhere
  loadUsers();
}

function previousPage() {
  if (view.tokens.length === 0) return;
  view.token = view.tokens.pop();
  loadUsers();
}

let reloading = null;
function reloadSoon() {
  clearTimeout(reloading);
  reloading = setTimeout(loadUsers, 150);
}

/** Shows each violation next to its field; the rest as the form's status. */
function showViolations(prefix, err, statusId) {
  let first = null;
  for (const v of err.violations) {
    // labels[team], set_labels[team] and remove_labels[0] belong to the
    // labels field.
    const base = v.field.split(/[[.]/)[0];
    const field = /labels$/.test(base) ? "labels" : base;
    const input = $(`${prefix}-${field}`);
    const error = $(`${prefix}-${field}-error`);
    if (input && error) {
      error.textContent = field === base ? v.description : `${v.field}: ${v.description}`;
      input.setAttribute("aria-invalid", "true");
      first ??= input;
    }
  }
  say(statusId, explain(err), "bad");
  first?.focus();
}

function clearErrors(form) {
  for (const error of form.querySelectorAll(".error")) error.textContent = "";
  for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
}

async function createUser(event) {
  event.preventDefault();
  const form = $("create-form");
  clearErrors(form);
  const message = {
    name: $("create-name").value,
    email: $("create-email").value,
    role: $("create-role").value,
  };
  if ($("create-bio").value) message.bio = $("create-bio").value;
  try {
    message.labels = parseLabels($("create-labels").value);
  } catch (err) {
    showViolations("create", { message: err.message, violations: [{ field: "labels", description: err.message }] }, "create-status");
    return;
  }
  try {
    const user = await call("CreateUser", message);
    form.reset();
    say("create-status", `Created ${user.name}.`, "good");
    reloadSoon();
  } catch (err) {
    showViolations("create", err, "create-status");
  }
}

let editing = null;

function startEdit(user) {
  editing = user;
  const form = $("edit-form");
  clearErrors(form);
  say("edit-status", "");
  $("edit-who").textContent = user.name;
  $("edit-id").value = user.id;
  $("edit-name").value = user.name;
  $("edit-email").value = user.email;
  $("edit-role").value = user.role || "USER_ROLE_VIEWER";
  $("edit-bio").value = user.bio || "";
  $("edit-labels").value = labelsText(user.labels);
  $("edit-reload").hidden = true;
  form.hidden = false;
  $("edit-name").focus();
}

async function saveEdit(event) {
  event.preventDefault();
  const form = $("edit-form");
  clearErrors(form);
  // Only what changed: UpdateUser changes the fields present, and only
  // the version the form started from (its etag): a change someone made
  // meanwhile is never overwritten.
  const message = { userId: editing.id, etag: editing.etag || "" };
  for (const field of ["name", "email", "role", "bio"]) {
    const value = $(`edit-${field}`).value;
    const before = field === "role" ? editing.role || "USER_ROLE_VIEWER" : editing[field] || "";
    if (value !== before) message[field] = value;
  }
  let labels;
  try {
    labels = parseLabels($("edit-labels").value);
  } catch (err) {
    showViolations("edit", { message: err.message, violations: [{ field: "labels", description: err.message }] }, "edit-status");
    return;
  }
  const before = editing.labels || {};
  message.setLabels = Object.fromEntries(Object.entries(labels).filter(([key, value]) => before[key] !== value));
  message.removeLabels = Object.keys(before).filter((key) => !Object.hasOwn(labels, key));
  try {
    const user = await call("UpdateUser", message);
    form.hidden = true;
    say("list-status", `Saved ${user.name}.`, "good");
    reloadSoon();
  } catch (err) {
    showViolations("edit", err, "edit-status");
    if (err.code === "aborted") {
      say("edit-status", `Someone else changed ${editing.name} since you opened it; nothing was saved. Reload the user to see their change, then edit again.`, "bad");
      $("edit-reload").hidden = false;
      $("edit-reload").focus();
    }
  }
}

/** Reopens the edit on the user as it is now, after a conflict. */
async function reloadEdit() {
  try {
    const { user } = await call("GetUser", { userId: editing.id });
    startEdit(user);
    say("edit-status", `Reloaded ${user.name} as it is now.`, "good");
  } catch (err) {
    say("edit-status", explain(err), "bad");
  }
}

async function deleteUser(user) {
  if (!window.confirm(`Delete ${user.name} (${user.email})?`)) return;
  try {
    await call("DeleteUser", { userId: user.id, etag: user.etag || "" });
    say("list-status", `Deleted ${user.name}.`, "good");
    reloadSoon();
  } catch (err) {
    const changed = `${user.name} changed since the list was loaded; nothing was deleted. Look again, then delete.`;
    say("list-status", err.code === "aborted" ? changed : explain(err), "bad");
    if (err.code === "aborted") reloadSoon();
  }
}

const EVENT_WORDS = { user_created: "Created", user_updated: "Updated", user_deleted: "Deleted" };

/** Follows every change over SubscribeUserEvents, until the token changes.
 * It remembers the sequence of the last change shown, and when the stream
 * breaks it subscribes again after it, so that the changes made while it
 * was away arrive too, once each. */
let lastSequence = null; // the last change shown, as a decimal string
let feedFailures = 0;

async function follow() {
  following?.abort();
  const controller = new AbortController();
  following = controller;
  const resuming = lastSequence !== null;
  say("feed-status", resuming ? "Reconnecting…" : "Connecting…");
  try {
    if (lastSequence === null) {
      // Where the directory stands now: the feed starts after it.
      lastSequence = (await call("SearchUsers", { pageSize: 1 })).sequence || "0";
    }
    const request = { userIds: ["*"], resumeAfter: lastSequence };
    for await (const event of stream("SubscribeUserEvents", request, controller.signal)) {
      if (event.eventType === "subscribed") {
        say("feed-status", resuming
          ? `Following every change; reconnected after change ${lastSequence}, nothing missed.`
          : "Following every change.", "good");
        continue;
      }
      feedFailures = 0;
      lastSequence = event.sequence;
      const user = userOf(fromBase64(event.payload || ""));
      const item = document.createElement("li");
      const kind = document.createElement("span");
      kind.className = "kind";
      kind.textContent = `${EVENT_WORDS[event.eventType] || event.eventType} `;
      const who = document.createElement("span");
      who.textContent = `${user.name} <${user.email}>`;
      const when = document.createElement("time");
      when.textContent = new Date(Number(event.timestamp)).toLocaleTimeString();
      item.append(kind, who, when);
      $("feed").prepend(item);
      while ($("feed").children.length > 100) $("feed").lastChild.remove();
      reloadSoon();
    }
  } catch (err) {
    if (controller.signal.aborted) return;
    // Too far behind to resume: start again from now, and reload the list.
    if (err.code === "out_of_range") {
      lastSequence = null;
      reloadSoon();
    }
    feedFailures += 1;
    const wait = Math.min(5000, 250 * 2 ** Math.min(feedFailures, 5));
    say("feed-status", `${explain(err)} Reconnecting in ${Math.ceil(wait / 1000)} s.`, "bad");
    setTimeout(() => following === controller && follow(), wait);
  }
}

async function useToken(event) {
  event?.preventDefault();
  token = $("token").value.trim();
  following?.abort();
  if (!token) {
    sessionStorage.removeItem(TOKEN_KEY);
    say("token-status", "Paste a token from `usersvc token`.", "bad");
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  lastSequence = null;
  say("token-status", "Checking…");
  try {
    // Any call that needs a valid token tells whether this one is.
    for await (const _ of stream("ListUsers", { limit: 1 }));
    say("token-status", `Using the token of ${whoami(token)}.`, "good");
  } catch (err) {
    say("token-status", explain(err), "bad");
    users = new Map();
    renderUsers();
    say("feed-status", "Not following: use a token first.");
    return;
  }
  search();
  follow();
}

function forget() {
  token = "";
  $("token").value = "";
  sessionStorage.removeItem(TOKEN_KEY);
  following?.abort();
  users = new Map();
  renderUsers();
  say("token-status", "Token forgotten.");
  say("feed-status", "Not following: use a token first.");
}

document.addEventListener("DOMContentLoaded", () => {
  $("token-form").addEventListener("submit", useToken);
  $("forget").addEventListener("click", forget);
  $("role-filter").addEventListener("change", () => search());
  $("refresh").addEventListener("click", loadUsers);
  $("search-form").addEventListener("submit", search);
  for (const th of document.querySelectorAll("#users th.sortable")) {
    th.querySelector("button").addEventListener("click", () => sortBy(th.dataset.sort));
  }
  $("next").addEventListener("click", nextPage);
  $("previous").addEventListener("click", previousPage);
  $("edit-reload").addEventListener("click", reloadEdit);
  $("create-form").addEventListener("submit", createUser);
  $("edit-form").addEventListener("submit", saveEdit);
  $("edit-cancel").addEventListener("click", () => {
    $("edit-form").hidden = true;
  });
  renderUsers();
  if (token) {
    $("token").value = token;
    useToken();
  }
});
