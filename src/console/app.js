// memberd's console: a small front end on memberd's own JSON API, served by
// memberd itself. It signs in with session cookies; every state-changing
// request repeats the CSRF cookie in X-CSRF-Token. Nothing is fetched from
// anywhere but this server. Pages are built with DOM calls, never from HTML
// strings, so no value from the API can become markup.
"use strict";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
let me = null;

// ---- DOM and HTTP helpers -------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "text") el.textContent = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function cookie(name) {
  const found = document.cookie.split("; ").find((c) => c.startsWith(name + "="));
  return found ? decodeURIComponent(found.slice(name.length + 1)) : "";
}

class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `request failed (${status})`);
    this.status = status;
    this.code = error.code || "";
    this.field = error.field || "";
  }
}

async function api(method, path, body, retried) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = cookie("memberd_csrf");
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (response.status === 401 && data && data.error && data.error.code === "token_expired" && !retried) {
    const refreshed = await fetch("/auth/refresh", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": cookie("memberd_csrf") },
      body: "{}",
    });
    if (refreshed.ok) return api(method, path, body, true);
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

const enc = encodeURIComponent;

function toast(message) {
  const line = h("div", { text: message });
  document.getElementById("toast").append(line);
  setTimeout(() => line.remove(), 4000);
}

function errorBox() {
  return h("p", { class: "error", role: "alert" });
}

function showError(box, error) {
  box.textContent = error.field ? `${error.message} (${error.field})` : error.message;
}

// A form whose submit runs `action`; errors from the API are shown in it.
function form(attrs, fields, submitLabel, action) {
  const box = errorBox();
  const button = h("button", { type: "submit" }, submitLabel);
  const el = h("form", attrs, fields, h("div", { class: "row" }, button), box);
  el.addEventListener("submit", async (event) => {
    event.preventDefault();
    box.textContent = "";
    button.disabled = true;
    try {
      await action(new FormData(el), el);
    } catch (error) {
      showError(box, error);
    } finally {
      button.disabled = false;
    }
  });
  return el;
}

function field(label, name, attrs) {
  const id = "f-" + name + "-" + Math.random().toString(36).slice(2, 7);
  return h("div", {}, h("label", { for: id }, label), h("input", { id, name, ...(attrs || {}) }));
}

function select(label, name, options, attrs) {
  const id = "f-" + name + "-" + Math.random().toString(36).slice(2, 7);
  return h("div", {},
    h("label", { for: id }, label),
    h("select", { id, name, ...(attrs || {}) }, options.map(([value, text]) => h("option", { value }, text))));
}

// What an API client may do; a new one asks for decisions only unless more is ticked.
const CAPABILITIES = [
  ["check", "ask for decisions"],
  ["read", "read users, roles, rules and the catalog"],
  ["users:write", "disable and enable users (never operators)"],
  ["grants:write", "grant permissions and assign roles (never memberd's own)"],
  ["roles:write", "change roles, rules and the catalog (never memberd's own)"],
  ["scim", "provision users and groups over SCIM"],
  ["admin", "everything, memberd's own authority included"],
];

function capabilitiesField(chosen) {
  return h("fieldset", {}, h("legend", {}, "Capabilities"),
    CAPABILITIES.map(([value, text]) => {
      const id = "f-cap-" + value.replace(":", "-") + "-" + Math.random().toString(36).slice(2, 7);
      return h("div", { class: "check" },
        h("input", { type: "checkbox", id, name: "capabilities", value, checked: chosen.includes(value) }),
        h("label", { for: id }, h("code", {}, value), " ", text));
    }));
}

// Runs a destructive action after the operator confirms it.
async function confirmed(question, action) {
  if (!window.confirm(question)) return;
  try {
    await action();
  } catch (error) {
    toast(error.message);
  }
}

function table(headings, rows) {
  return h("table", {},
    h("thead", {}, h("tr", {}, headings.map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: headings.length, class: "muted" }, "Nothing here."))));
}

function page(title, ...content) {
  document.title = `${title} · memberd`;
  main.replaceChildren(h("h1", {}, title), ...content);
  main.focus();
}

function permissionText(p) {
  return `${p.module}/${p.action} in ${p.scope_type}:${p.scope_id}`;
}

// ---- signing in -----------------------------------------------------------

function loginPage() {
  nav.replaceChildren();
  who.textContent = "";
  let captchaId = null;
  const captcha = h("div", {});
  const login = form({ class: "card", "aria-label": "Sign in" }, [
    field("Username", "username", { autocomplete: "username", required: true, autofocus: true }),
    field("Password", "password", { type: "password", autocomplete: "current-password", required: true }),
    captcha,
  ], "Sign in", async (data) => {
    const body = { username: data.get("username"), password: data.get("password"), use_cookies: true };
    if (captchaId) {
      body.captcha_id = captchaId;
      body.captcha_answer = data.get("captcha_answer");
    }
    try {
      const answer = await api("POST", "/auth/login", body);
      if (answer.mfa_required) return totpStep(answer.mfa_token);
      await start();
    } catch (error) {
      if (error.code === "captcha_required" || error.code === "captcha_invalid" || captchaId) await showCaptcha();
      throw error;
    }
  });
  async function showCaptcha() {
    const challenge = await api("GET", "/auth/captcha");
    captchaId = challenge.captcha_id;
    captcha.replaceChildren(
      h("img", { src: challenge.image, alt: "Captcha: type the digits shown", id: "captcha-image" }),
      field("Digits in the picture", "captcha_answer", { inputmode: "numeric", autocomplete: "off", required: true }));
  }
  page("Sign in to memberd", login);
}

function totpStep(mfaToken) {
  const step = form({ class: "card", "aria-label": "Second factor" }, [
    h("p", {}, "Enter the 6-digit code from your authenticator app, or a recovery code."),
    field("Code", "code", { autocomplete: "one-time-code", inputmode: "numeric", required: true, autofocus: true }),
  ], "Verify", async (data) => {
    await api("POST", "/auth/login/totp", { mfa_token: mfaToken, code: data.get("code").trim(), use_cookies: true });
    await start();
  });
  page("Second factor", step);
}

// An administrator reset the password: nothing else works until the
// operator chooses their own, after which a refresh drops the restriction.
function passwordChangePage() {
  nav.replaceChildren();
  const change = form({ class: "card", "aria-label": "Choose a new password" }, [
    h("p", {}, "An administrator reset your password. Choose your own to continue."),
    field("Password you were given", "current_password", { type: "password", autocomplete: "current-password", required: true, autofocus: true }),
    field("New password (at least 12 characters)", "new_password", { type: "password", autocomplete: "new-password", required: true, minlength: 12 }),
  ], "Set password", async (data) => {
    await api("POST", "/auth/password", { current_password: data.get("current_password"), new_password: data.get("new_password") });
    await fetch("/auth/refresh", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": cookie("memberd_csrf") },
      body: "{}",
    });
    await start();
  });
  page("Choose a new password", change);
}

// ---- the frame: who is signed in, and the pages their roles reveal ---------

async function start() {
  try {
    me = await api("GET", "/me");
  } catch (error) {
    me = null;
  }
  if (!me || !me.authenticated) return loginPage();
  if (me.password_change_required) return passwordChangePage();
  const user = me.user || {};
  who.replaceChildren(
    h("a", { href: "#/account" }, user.display_name || user.authentik_sub || "my account"), " · ",
    h("button", { class: "secondary", type: "button", onclick: signOut }, "Sign out"));
  let pages = [];
  try {
    const menus = await api("GET", "/me/menus");
    const root = menus.menus.find((node) => node.name === "memberd");
    pages = root ? root.children.filter((node) => !node.hidden) : [];
  } catch (error) {
    toast(error.message);
  }
  nav.replaceChildren(...pages.map((node) => {
    const hash = (node.path || "").split("#")[1] || "/";
    return h("a", { href: "#" + hash, "data-page": node.name }, node.title);
  }));
  route();
}

async function signOut() {
  try {
    await api("POST", "/auth/logout");
  } catch (error) {
    // Signed out either way.
  }
  me = null;
  location.hash = "#/";
  loginPage();
}

// ---- my account -------------------------------------------------------------

async function accountPage() {
  const sessions = await api("GET", "/auth/sessions");
  const rows = sessions.sessions.map((s) => h("tr", {},
    h("td", {}, s.current ? h("span", { class: "pill ok" }, "this one") : ""),
    h("td", {}, s.ip || ""), h("td", {}, s.user_agent || ""), h("td", {}, s.created_at), h("td", {}, s.last_used_at),
    h("td", {}, s.current ? "" : h("button", { class: "danger", type: "button", onclick: () =>
      confirmed("Revoke this session?", async () => { await api("DELETE", `/auth/sessions/${enc(s.id)}`); accountPage(); }) }, "Revoke"))));
  const totp = h("section", { "aria-label": "Two-factor authentication" }, h("h2", {}, "Two-factor authentication"));
  const enrolled = me.totp_enabled || (me.account && me.account.totp_enabled);
  if (enrolled) {
    totp.append(h("p", {}, "TOTP is on."), h("p", { class: "muted" }, `Recovery codes left: ${me.recovery_codes_left ?? "?"}`));
  } else {
    totp.append(h("p", {}, "TOTP is off. Turn it on to protect this account with a code from an authenticator app."),
      h("button", { type: "button", id: "totp-enroll", onclick: enrol }, "Set up TOTP"));
  }
  async function enrol() {
    const enrolment = await api("POST", "/auth/totp/enroll");
    totp.replaceChildren(h("h2", {}, "Set up TOTP"),
      h("p", {}, "Scan the code with your authenticator app, or type the secret, then enter the code it shows."),
      h("img", { src: enrolment.qr_png, alt: "QR code of the TOTP secret", width: 200, height: 200, id: "totp-qr" }),
      h("p", {}, "Secret: ", h("code", { id: "totp-secret" }, enrolment.secret)),
      form({ "aria-label": "Confirm TOTP" }, [
        field("Your password", "password", { type: "password", autocomplete: "current-password", required: true }),
        field("Code", "code", { inputmode: "numeric", autocomplete: "one-time-code", required: true }),
      ], "Turn on", async (data) => {
          const confirmedCodes = await api("POST", "/auth/totp/confirm", { password: data.get("password"), code: data.get("code").trim() });
          totp.replaceChildren(h("h2", {}, "TOTP is on"),
            h("p", {}, "Save these recovery codes somewhere safe: each signs you in once if you lose your device. They are shown only now."),
            h("pre", { class: "secret", id: "recovery-codes" }, confirmedCodes.recovery_codes.join("\n")),
            h("button", { type: "button", onclick: () => navigator.clipboard.writeText(confirmedCodes.recovery_codes.join("\n")).then(() => toast("Copied")) }, "Copy"));
          me = await api("GET", "/me");
        }));
  }
  const password = form({ class: "card", "aria-label": "Change password" }, [
    field("Current password", "current_password", { type: "password", autocomplete: "current-password", required: true }),
    field("New password", "new_password", { type: "password", autocomplete: "new-password", required: true, minlength: 12 }),
  ], "Change password", async (data) => {
    await api("POST", "/auth/password", { current_password: data.get("current_password"), new_password: data.get("new_password") });
    toast("Password changed; your other sessions were ended.");
  });
  page("My account", h("h2", {}, "Sessions"), table(["", "Address", "Browser", "Started", "Last used", ""], rows), totp, h("h2", {}, "Password"), password);
}

// ---- users --------------------------------------------------------------------

async function usersPage(params) {
  const q = params.get("q") || "";
  const cursor = params.get("cursor") || "";
  const query = new URLSearchParams({ limit: "25" });
  if (q) query.set("q", q);
  if (cursor) query.set("cursor", cursor);
  const result = await api("GET", `/admin/users?${query}`);
  const rows = result.users.map((u) => h("tr", {},
    h("td", {}, h("a", { href: `#/users/${enc(u.authentik_sub)}` }, u.authentik_sub)),
    h("td", {}, u.email || ""), h("td", {}, u.display_name || ""),
    h("td", {}, u.is_active ? h("span", { class: "pill ok" }, "active") : h("span", { class: "pill bad" }, "disabled"))));
  const search = h("form", { class: "row", role: "search", onsubmit: (e) => {
    e.preventDefault();
    location.hash = `#/users?q=${enc(new FormData(e.target).get("q"))}`;
  } }, field("Search by subject, email or name", "q", { value: q, type: "search" }), h("button", { type: "submit" }, "Search"));
  const pager = h("div", { class: "pager" },
    cursor ? h("a", { href: `#/users?q=${enc(q)}` }, "« First page") : "",
    result.next_cursor ? h("a", { href: `#/users?q=${enc(q)}&cursor=${enc(result.next_cursor)}`, id: "next-page" }, "Next page »") : "");
  page("Users", search, table(["Subject", "Email", "Name", "Status"], rows), pager);
}

async function userPage(sub) {
  const detail = await api("GET", `/admin/users/${enc(sub)}`);
  const user = detail.user;
  const reload = () => userPage(sub);
  const status = user.is_active
    ? h("button", { class: "danger", type: "button", onclick: () => confirmed(`Disable ${sub}? Every check will be denied and every session ends.`, async () => { await api("POST", `/admin/users/${enc(sub)}/disable`); reload(); }) }, "Disable")
    : h("button", { type: "button", onclick: async () => { await api("POST", `/admin/users/${enc(sub)}/enable`); reload(); } }, "Enable");
  const account = detail.account;
  const identity = h("section", { "aria-label": "Identity" },
    h("p", {}, "Subject: ", h("code", {}, user.authentik_sub)),
    h("p", {}, `Email: ${user.email || "—"} · Name: ${user.display_name || "—"} · `,
      user.is_active ? h("span", { class: "pill ok" }, "active") : h("span", { class: "pill bad" }, "disabled"), " ", status),
    account ? h("p", {}, `Local account: ${account.username} · TOTP ${account.totp_enabled ? "on" : "off"} `,
      account.totp_enabled ? h("button", { class: "danger", type: "button", onclick: () => confirmed(`Remove ${account.username}'s TOTP?`, async () => { await api("POST", `/admin/accounts/${enc(account.username)}/totp/reset`); reload(); }) }, "Reset TOTP") : "") : "",
    detail.identities.length ? h("p", {}, "Identities: ", detail.identities.map((i) => `${i.issuer} ${i.subject}`).join(", ")) : "");

  const roles = (await api("GET", "/admin/roles")).roles.map((r) => [r.name, r.name]);
  const roleRows = detail.roles.map((r) => h("tr", {}, h("td", {}, r.role), h("td", {}, `${r.scope_type}:${r.scope_id}`),
    h("td", {}, h("button", { class: "danger", type: "button", onclick: () => confirmed(`Take ${r.role} from ${sub}?`, async () => {
      await api("DELETE", `/admin/users/${enc(sub)}/roles`, { role: r.role, scope_type: r.scope_type, scope_id: r.scope_id }); reload();
    }) }, "Unassign"))));
  const assign = form({ class: "row", "aria-label": "Assign a role" }, [
    select("Role", "role", roles), field("Scope type", "scope_type", { placeholder: "* for everywhere", value: "*" }), field("Scope id", "scope_id", { value: "*" }),
  ], "Assign", async (data) => {
    await api("POST", `/admin/users/${enc(sub)}/roles`, { role: data.get("role"), scope_type: data.get("scope_type"), scope_id: data.get("scope_id") });
    reload();
  });

  const grantRows = detail.grants.map((g) => h("tr", {}, h("td", {}, permissionText(g)), h("td", {}, g.effect),
    h("td", {}, h("button", { class: "danger", type: "button", onclick: () => confirmed(`Revoke ${permissionText(g)}?`, async () => {
      await api("POST", "/admin/permissions/revoke", { authentik_sub: sub, scope_type: g.scope_type, scope_id: g.scope_id, module: g.module, action: g.action }); reload();
    }) }, "Revoke"))));
  const grant = form({ class: "row", "aria-label": "Grant a permission" }, [
    field("Scope type", "scope_type", { required: true }), field("Scope id", "scope_id", { required: true }),
    field("Module", "module", { required: true }), field("Action", "action", { required: true }),
    select("Effect", "effect", [["allow", "allow"], ["deny", "deny"]]),
  ], "Grant", async (data) => {
    await api("POST", "/admin/permissions/grant", Object.fromEntries([["authentik_sub", sub], ...data.entries()]));
    reload();
  });

  const why = h("div", { id: "why" });
  const effective = detail.permissions.map((p) => h("tr", {}, h("td", {}, permissionText(p)), h("td", {},
    h("button", { class: "secondary", type: "button", onclick: () => explain(sub, p, why) }, "why?"))));
  const denied = detail.denied.map((p) => h("tr", {}, h("td", {}, permissionText(p)), h("td", {}, h("span", { class: "pill bad" }, "denied"))));

  const sessions = await api("GET", `/admin/users/${enc(sub)}/sessions`);
  const sessionRows = sessions.sessions.map((s) => h("tr", {}, h("td", {}, s.ip || ""), h("td", {}, s.created_at), h("td", {}, s.last_used_at),
    h("td", {}, h("button", { class: "danger", type: "button", onclick: () => confirmed("Revoke this session?", async () => { await api("DELETE", `/admin/users/${enc(sub)}/sessions/${enc(s.id)}`); reload(); }) }, "Revoke"))));

  page(`User ${sub}`, identity,
    h("h2", {}, "Roles"), table(["Role", "Scope", ""], roleRows), assign,
    h("h2", {}, "Direct grants"), table(["Permission", "Effect", ""], grantRows), grant,
    h("h2", {}, "Effective permissions"), h("p", { class: "muted" }, `At revision ${detail.revision}.`),
    table(["Permission", ""], [...effective, ...denied]), why,
    h("h2", {}, "Sessions"), table(["Address", "Started", "Last used", ""], sessionRows));
}

async function explain(sub, p, into) {
  const query = new URLSearchParams({ subject: sub, scope_type: p.scope_type, scope_id: p.scope_id, module: p.module, action: p.action });
  const answer = await api("GET", `/v1/explain?${query}`);
  into.replaceChildren(h("section", { "aria-label": "Why" },
    h("h2", {}, `Why ${permissionText(p)}: ${answer.reason}`),
    h("ul", {}, answer.contributions.map((c) => h("li", {},
      `${c.effect} ${c.module}/${c.action} in ${c.scope_type}:${c.scope_id}, `,
      c.source === "direct" ? "granted directly" : `through ${c.chain.join(" → ")} held in ${c.assigned_scope_type}:${c.assigned_scope_id}`,
      c.granted ? ` — by ${c.granted.actor.kind} ${c.granted.actor.id} at ${c.granted.at}` : "")))));
}

// ---- roles ----------------------------------------------------------------------

async function rolesPage() {
  const roles = (await api("GET", "/admin/roles")).roles;
  const rows = roles.map((r) => h("tr", {}, h("td", {}, h("a", { href: `#/roles/${enc(r.name)}` }, r.name)),
    h("td", {}, r.description), h("td", {}, r.parents.join(", ")), h("td", {}, String(r.permissions.length))));
  const create = form({ class: "card", "aria-label": "Create a role" }, [
    field("Name", "name", { required: true }), field("Description", "description"),
    field("Inherits (comma-separated roles)", "inherits"),
  ], "Create role", async (data) => {
    const inherits = data.get("inherits").split(",").map((s) => s.trim()).filter(Boolean);
    await api("POST", "/admin/roles", { name: data.get("name"), description: data.get("description"), inherits });
    location.hash = `#/roles/${enc(data.get("name"))}`;
  });
  page("Roles", table(["Name", "Description", "Inherits", "Permissions"], rows), h("h2", {}, "New role"), create);
}

async function rolePage(name) {
  const role = await api("GET", `/admin/roles/${enc(name)}`);
  const reload = () => rolePage(name);
  const r = role.role || role;
  const edit = form({ class: "card", "aria-label": "Edit role" }, [
    field("Description", "description", { value: r.description || "" }),
    field("Inherits (comma-separated roles)", "inherits", { value: (r.parents || []).join(", ") }),
  ], "Save", async (data) => {
    const inherits = data.get("inherits").split(",").map((s) => s.trim()).filter(Boolean);
    await api("PATCH", `/admin/roles/${enc(name)}`, { description: data.get("description"), inherits });
    toast("Saved");
    reload();
  });
  const perms = (r.permissions || []).map((p) => h("tr", {},
    h("td", {}, `${p.module}/${p.action}`), h("td", {}, p.scope ? `${p.scope.scope_type}:${p.scope.scope_id}` : "wherever held"), h("td", {}, p.effect),
    h("td", {}, h("button", { class: "danger", type: "button", onclick: () => confirmed(`Remove ${p.module}/${p.action} from ${name}?`, async () => {
      const body = { module: p.module, action: p.action };
      if (p.scope) Object.assign(body, { scope_type: p.scope.scope_type, scope_id: p.scope.scope_id });
      await api("DELETE", `/admin/roles/${enc(name)}/permissions`, body); reload();
    }) }, "Remove"))));
  const add = form({ class: "row", "aria-label": "Add a permission" }, [
    field("Module", "module", { required: true }), field("Action", "action", { required: true }),
    select("Effect", "effect", [["allow", "allow"], ["deny", "deny"]]),
    field("Only in scope type", "scope_type"), field("Only in scope id", "scope_id"),
  ], "Add", async (data) => {
    const body = { module: data.get("module"), action: data.get("action"), effect: data.get("effect") };
    if (data.get("scope_type")) Object.assign(body, { scope_type: data.get("scope_type"), scope_id: data.get("scope_id") });
    await api("POST", `/admin/roles/${enc(name)}/permissions`, body);
    reload();
  });
  const holders = (role.holders || []).map((sub) => h("li", {}, h("a", { href: `#/users/${enc(sub)}` }, sub)));
  const remove = h("button", { class: "danger", type: "button", onclick: () => confirmed(`Delete role ${name}? Its holders lose it.`, async () => {
    await api("DELETE", `/admin/roles/${enc(name)}`); location.hash = "#/roles";
  }) }, "Delete role");
  page(`Role ${name}`, edit, h("h2", {}, "Permissions"), table(["Permission", "Where", "Effect", ""], perms), add,
    h("h2", {}, "Held by"), holders.length ? h("ul", {}, holders) : h("p", { class: "muted" }, "Nobody."), remove);
}

// ---- menus ------------------------------------------------------------------------

async function menusPage() {
  const rules = (await api("GET", "/admin/rules")).rules;
  const reload = () => menusPage();
  const children = (parent) => rules.filter((r) => (r.parent || null) === parent);
  const editor = h("div", { id: "rule-editor" });
  const tree = (parent) => {
    const list = children(parent);
    if (!list.length) return "";
    return h("ul", { class: "tree" }, list.map((r) => h("li", {},
      h("span", { class: "pill" }, r.kind), " ", h("strong", {}, r.title), " ", h("code", {}, r.name),
      ` ${r.module}/${r.action} · weight ${r.weight}`, r.hidden ? " · hidden" : "", " ",
      h("button", { class: "secondary", type: "button", onclick: () => editRule(r) }, "Edit"), " ",
      h("button", { class: "danger", type: "button", onclick: () => {
        const cascade = children(r.name).length > 0;
        confirmed(cascade ? `Delete ${r.name} and everything under it?` : `Delete ${r.name}?`, async () => {
          await api("DELETE", `/admin/rules/${enc(r.name)}${cascade ? "?cascade=true" : ""}`); reload();
        });
      } }, "Delete"),
      tree(r.name))));
  };
  const parents = [["", "(top level)"], ...rules.filter((r) => r.kind !== "button").map((r) => [r.name, r.name])];
  function editRule(r) {
    editor.replaceChildren(form({ class: "card", "aria-label": `Edit ${r.name}` }, [
      h("h2", {}, `Edit ${r.name}`),
      field("Title", "title", { value: r.title, required: true }),
      select("Parent", "parent", parents.filter(([n]) => n !== r.name)),
      field("Weight (smaller first)", "weight", { type: "number", value: r.weight }),
      field("Path", "path", { value: r.path || "" }),
      h("label", {}, h("input", { type: "checkbox", name: "hidden", checked: r.hidden }), " Hidden"),
    ], "Save", async (data) => {
      await api("PATCH", `/admin/rules/${enc(r.name)}`, {
        title: data.get("title"), parent: data.get("parent") || null, weight: Number(data.get("weight")),
        path: data.get("path") || null, hidden: data.get("hidden") === "on",
      });
      reload();
    }));
    const parentSelect = editor.querySelector("select[name=parent]");
    parentSelect.value = r.parent || "";
    editor.scrollIntoView();
  }
  const add = form({ class: "card", "aria-label": "Add a rule" }, [
    h("div", { class: "row" }, field("Name", "name", { required: true, placeholder: "system:user:list" }),
      select("Kind", "kind", [["menu", "menu"], ["directory", "directory"], ["button", "button"]]),
      select("Parent", "parent", parents), field("Title", "title", { required: true })),
    h("div", { class: "row" }, field("Path", "path"), field("Weight", "weight", { type: "number", value: "0" }),
      field("Module", "module", { required: true }), field("Action", "action", { required: true })),
  ], "Add rule", async (data) => {
    await api("POST", "/admin/rules", {
      name: data.get("name"), kind: data.get("kind"), parent: data.get("parent") || null, title: data.get("title"),
      path: data.get("path") || null, weight: Number(data.get("weight") || 0), module: data.get("module"), action: data.get("action"),
    });
    reload();
  });
  const roles = (await api("GET", "/admin/roles")).roles.map((r) => [r.name, r.name]);
  const bindings = h("div", {});
  const bind = h("section", { "aria-label": "Bind rules to a role" }, h("h2", {}, "Bind rules to a role"),
    select("Role", "bind-role", roles, { onchange: (e) => showBindings(e.target.value) }), bindings);
  async function showBindings(role) {
    if (!role) return;
    const bound = new Set((await api("GET", `/admin/roles/${enc(role)}/rules`)).rules);
    bindings.replaceChildren(form({ "aria-label": `Rules of ${role}` },
      rules.map((r) => h("label", {}, h("input", { type: "checkbox", name: "rule", value: r.name, checked: bound.has(r.name) }), ` ${r.name} (${r.title})`)),
      "Save bindings", async (data) => {
        await api("PUT", `/admin/roles/${enc(role)}/rules`, { rules: data.getAll("rule") });
        toast(`Bindings of ${role} saved`);
      }));
  }
  if (roles.length) showBindings(roles[0][0]);
  const preview = h("div", {});
  const previewForm = form({ class: "row", "aria-label": "Preview a user's menu" }, [
    field("User (subject)", "sub", { required: true }), field("Scope type", "scope_type", { value: "memberd" }), field("Scope id", "scope_id", { value: "console" }),
  ], "Preview", async (data) => {
    const query = new URLSearchParams({ scope_type: data.get("scope_type"), scope_id: data.get("scope_id") });
    const seen = await api("GET", `/admin/users/${enc(data.get("sub"))}/menus?${query}`);
    const render = (nodes) => h("ul", { class: "tree" }, nodes.map((n) => h("li", {}, n.title, n.hidden ? " (hidden)" : "", n.children.length ? render(n.children) : "")));
    preview.replaceChildren(seen.menus.length ? render(seen.menus) : h("p", { class: "muted" }, "No menus."),
      h("p", {}, "Buttons: ", seen.buttons.join(", ") || "none"));
  });
  page("Menus", h("section", { "aria-label": "Rule tree" }, tree(null) || h("p", { class: "muted" }, "No rules yet.")), editor, add, bind,
    h("h2", {}, "Preview"), previewForm, preview);
}

// ---- API clients ---------------------------------------------------------------------

function splitList(text) {
  return text.split(",").map((s) => s.trim()).filter(Boolean);
}

function showKey(into, title, clientKey, apiKey) {
  into.replaceChildren(h("section", { class: "secret", "aria-label": "New API key" },
    h("h2", {}, title), h("p", {}, "Copy the key now: memberd keeps only its hash and cannot show it again."),
    h("p", {}, "X-Client-Key: ", h("code", { id: "new-client-key" }, clientKey)),
    h("p", {}, "X-API-Key: ", h("code", { id: "new-api-key" }, apiKey)),
    h("button", { type: "button", onclick: () => navigator.clipboard.writeText(apiKey).then(() => toast("Key copied")) }, "Copy key")));
}

async function clientsPage() {
  const clients = (await api("GET", "/admin/clients")).clients;
  const reload = () => clientsPage();
  const shown = h("div", {});
  const editor = h("div", {});
  const rows = clients.map((c) => h("tr", {},
    h("td", {}, h("code", {}, c.client_key)), h("td", {}, c.name),
    h("td", {}, c.status === "active" ? h("span", { class: "pill ok" }, "active") : h("span", { class: "pill bad" }, c.status)),
    h("td", {}, c.capabilities.join(", ")),
    h("td", {}, c.last_used_at || "never"), h("td", {}, c.expires_at || "never"), h("td", {}, c.rate_limit_per_minute ? `${c.rate_limit_per_minute}/min` : "none"),
    h("td", {},
      h("button", { class: "secondary", type: "button", onclick: () => edit(c) }, "Edit"), " ",
      h("button", { class: "secondary", type: "button", onclick: () => confirmed(`Rotate the key of ${c.name}? The old key stops working at once.`, async () => {
        const rotated = await api("POST", `/admin/clients/${enc(c.client_key)}/rotate`);
        showKey(shown, `New key for ${c.name}`, c.client_key, rotated.api_key);
      }) }, "Rotate"), " ",
      c.status === "active"
        ? h("button", { class: "danger", type: "button", onclick: () => confirmed(`Disable ${c.name}? Its requests are refused from now on.`, async () => { await api("POST", `/admin/clients/${enc(c.client_key)}/disable`); reload(); }) }, "Disable")
        : h("button", { type: "button", onclick: async () => { await api("POST", `/admin/clients/${enc(c.client_key)}/enable`); reload(); } }, "Enable"))));
  function edit(c) {
    editor.replaceChildren(form({ class: "card", "aria-label": `Edit ${c.name}` }, [
      h("h2", {}, `Edit ${c.name}`),
      field("Name", "name", { value: c.name, required: true }),
      field("Allowed origins (comma-separated; empty: any)", "allowed_origins", { value: c.allowed_origins.join(", ") }),
      field("Allowed IPs or CIDRs (comma-separated; empty: any)", "allowed_ips", { value: c.allowed_ips.join(", ") }),
      field("Allowed paths (comma-separated globs; empty: any)", "allowed_paths", { value: c.allowed_paths.join(", ") }),
      field("Expires at (RFC 3339; empty: never)", "expires_at", { value: c.expires_at || "" }),
      field("Requests per minute (empty: no limit)", "rate_limit_per_minute", { type: "number", min: 1, value: c.rate_limit_per_minute || "" }),
      capabilitiesField(c.capabilities),
    ], "Save", async (data) => {
      await api("PATCH", `/admin/clients/${enc(c.client_key)}`, {
        name: data.get("name"), allowed_origins: splitList(data.get("allowed_origins")), allowed_ips: splitList(data.get("allowed_ips")),
        allowed_paths: splitList(data.get("allowed_paths")), expires_at: data.get("expires_at") || null,
        rate_limit_per_minute: data.get("rate_limit_per_minute") ? Number(data.get("rate_limit_per_minute")) : null,
        capabilities: data.getAll("capabilities"),
      });
      reload();
    }));
  }
  const create = form({ class: "card", "aria-label": "Create an API client" }, [
    field("Name", "name", { required: true }),
    field("Allowed IPs or CIDRs (comma-separated; empty: any)", "allowed_ips"),
    field("Requests per minute (empty: no limit)", "rate_limit_per_minute", { type: "number", min: 1 }),
    capabilitiesField(["check"]),
  ], "Create client", async (data, el) => {
    const body = { name: data.get("name"), allowed_ips: splitList(data.get("allowed_ips")), capabilities: data.getAll("capabilities") };
    if (data.get("rate_limit_per_minute")) body.rate_limit_per_minute = Number(data.get("rate_limit_per_minute"));
    const created = await api("POST", "/admin/clients", body);
    await clientsPage();
    showKey(main.querySelector("#client-key-slot"), `Key for ${created.client.name}`, created.client_key, created.api_key);
  });
  shown.id = "client-key-slot";
  page("API clients", shown, table(["Client key", "Name", "Status", "Capabilities", "Last used", "Expires", "Limit", ""], rows), editor, h("h2", {}, "New client"), create);
}

// ---- audit ------------------------------------------------------------------------------

async function auditPage(params) {
  const query = new URLSearchParams();
  for (const key of ["actor", "target", "action", "since", "until", "cursor"]) if (params.get(key)) query.set(key, params.get(key));
  query.set("limit", "50");
  const [result, chain] = await Promise.all([api("GET", `/admin/audit?${query}`), api("GET", "/admin/audit/verify")]);
  const status = chain.intact
    ? h("p", { id: "chain-status" }, h("span", { class: "pill ok" }, "chain intact"), ` ${chain.records} records`)
    : h("p", { id: "chain-status", role: "alert" }, h("span", { class: "pill bad" }, "chain broken"), ` ${chain.break}`);
  const filters = h("form", { class: "row", "aria-label": "Filter the audit log", onsubmit: (e) => {
    e.preventDefault();
    const data = new FormData(e.target);
    const next = new URLSearchParams([...data.entries()].filter(([, v]) => v));
    location.hash = `#/audit?${next}`;
  } },
    ["actor", "target", "action"].map((k) => field(k[0].toUpperCase() + k.slice(1), k, { value: params.get(k) || "" })),
    field("Since (RFC 3339)", "since", { value: params.get("since") || "" }), field("Until", "until", { value: params.get("until") || "" }),
    h("button", { type: "submit" }, "Filter"));
  const show = (state) => (state === null || state === undefined ? "" : h("code", {}, JSON.stringify(state)));
  const rows = result.records.map((r) => h("tr", {},
    h("td", {}, String(r.seq)), h("td", {}, r.at), h("td", {}, `${r.actor.kind} ${r.actor.id}`), h("td", {}, r.action),
    h("td", {}, r.target), h("td", {}, show(r.before)), h("td", {}, show(r.after)), h("td", {}, r.ip || "")));
  const older = new URLSearchParams(query);
  older.delete("limit");
  if (result.next_cursor) older.set("cursor", result.next_cursor);
  const log = table(["#", "When", "Who", "Action", "Target", "Before", "After", "From"], rows);
  log.classList.add("audit");
  page("Audit log", status, filters, log,
    h("div", { class: "pager" }, params.get("cursor") ? h("a", { href: "#/audit" }, "« Newest") : "",
      result.next_cursor ? h("a", { href: `#/audit?${older}` }, "Older »") : ""));
}

// ---- routing ----------------------------------------------------------------------------

async function route() {
  if (!me) return;
  const [path, search] = (location.hash.slice(1) || "/").split("?");
  const params = new URLSearchParams(search || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  for (const link of nav.querySelectorAll("a")) {
    link.classList.toggle("current", link.getAttribute("href").split("?")[0] === `#/${parts[0] || ""}`);
  }
  try {
    if (parts[0] === "users" && parts[1]) await userPage(parts[1]);
    else if (parts[0] === "users") await usersPage(params);
    else if (parts[0] === "roles" && parts[1]) await rolePage(parts[1]);
    else if (parts[0] === "roles") await rolesPage();
    else if (parts[0] === "menus") await menusPage();
    else if (parts[0] === "clients") await clientsPage();
    else if (parts[0] === "audit") await auditPage(params);
    else if (parts[0] === "account") await accountPage();
    else {
      const first = nav.querySelector("a");
      if (first) location.hash = first.getAttribute("href");
      else await accountPage();
    }
  } catch (error) {
    if (error.status === 401) return loginPage();
    page("Something went wrong", h("p", { class: "error", role: "alert" }, error.message),
      error.status === 403 ? h("p", {}, "Your roles do not allow this page.") : "");
  }
}

window.addEventListener("hashchange", route);
start();
