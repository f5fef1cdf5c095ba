// The lab dashboard: plain JavaScript, no framework, nothing loaded from the internet.
// State comes from the API (POST /api/call/METHOD) and stays live through server-sent events (/api/events).
// Rendering is batched to one animation frame; plots are decimated to the canvas's pixels, the experiments
// table is paged, so a campaign of thousands of experiments stays responsive.
"use strict";

const ROLES = ["viewer", "operator", "admin"];
const PAGE = 50;
const FAILED = new Set(["failed", "faulted", "interrupted"]);
const state = {
  session: { name: null, role: null, signed_in: false },
  status: null,
  campaigns: new Map(),
  specs: new Map(),
  experiments: new Map(), // campaign id -> {rows: [], byId: Map}
  selected: null,
  page: 0, // 0 = the newest page
  experiment: null,
  audit: [],
  lastSeq: 0,
  stocks: [], // inventory.list
  tasks: [], // task.list: those still to do
  approvals: [], // approval.list: proposals waiting
  unavailable: {}, // a panel the lab service cannot answer (an older one behind `sdl dashboard`): why
  notified: [], // the tasks this page announced as they opened (their ids)
};
const metrics = { firstRender: null, applyMs: [], events: 0 };
window.sdl = { state, metrics, apply: applyEvent };

const $ = (id) => document.getElementById(id);
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const can = (role) => state.session.role !== null && ROLES.indexOf(state.session.role) >= ROLES.indexOf(role);
const fmt = (v) => (typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toPrecision(4)) : v === null || v === undefined ? "" : String(v));
const kv = (o) => (o ? Object.entries(o).map(([k, v]) => `${k}=${fmt(v)}`).join(", ") : "");
const badge = (s) => `<span class="badge st-${esc(s)}">${esc(s)}</span>`;
const amount = (v) => (typeof v === "number" ? String(Number(v.toPrecision(6))) : ""); // 9.5, not 9.500
const percent = (part, whole) => Math.max(0, Math.min(100, (100 * part) / whole));
const TITLE = document.title;
const UTC = /(\+00:00|Z)$/;
const when = (iso) => (iso ? `<span title="${esc(iso)}">${esc(iso.slice(0, 19).replace("T", " "))}${UTC.test(iso) ? " UTC" : ""}</span>` : "");

async function call(method, params = {}) {
  const response = await fetch(`/api/call/${method}`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(params), credentials: "same-origin",
  });
  const reply = await response.json();
  if (!reply.ok) { const e = new Error(reply.error.message); e.details = reply.error.details || []; e.type = reply.error.type; throw e; }
  return reply.result;
}

function showError(e, where) {
  const text = [e.message, ...(e.details || [])].join("\n");
  if (where) { where.innerHTML = `<div class="errors">${esc(text)}</div>`; } else { alert(text); }
}

// -- batched rendering -------------------------------------------------------------------------------------
const dirty = new Set();
let frame = null;
let eventAt = null;
function schedule(...parts) {
  parts.forEach((p) => dirty.add(p));
  if (frame === null) frame = requestAnimationFrame(flush);
}
function flush() {
  frame = null;
  const parts = new Set(dirty);
  dirty.clear();
  if (parts.has("header")) renderHeader();
  if (parts.has("lab")) renderLab();
  if (parts.has("campaigns")) renderCampaigns();
  if (parts.has("inventory")) renderInventory();
  if (parts.has("tasks")) renderTasks();
  if (parts.has("approvals")) renderApprovals();
  if (parts.has("detail")) renderDetail();
  if (parts.has("plots")) renderPlots();
  if (parts.has("table")) renderTable();
  if (parts.has("audit")) renderAudit();
  if (eventAt !== null) {
    void document.body.offsetHeight; // style and layout now, as the browser would before painting
    metrics.applyMs.push(performance.now() - eventAt); // from the frame's oldest event
    eventAt = null;
  }
}

// -- loading -----------------------------------------------------------------------------------------------
async function loadSession() {
  state.session = await (await fetch("/api/session", { credentials: "same-origin" })).json();
  schedule("header", "lab", "campaigns", "detail", "table", "tasks", "approvals");
}
async function loadStatus() {
  state.status = await call("status");
  for (const c of state.status.campaigns) state.campaigns.set(c.id, c);
  schedule("header", "lab", "campaigns");
}
async function loadCampaigns() {
  const reply = await call("campaign.list");
  for (const c of reply.campaigns) state.campaigns.set(c.id, c);
  const asked = new URLSearchParams(location.search).get("campaign");
  if (state.selected === null && asked && state.campaigns.has(asked)) await select(asked);
  if (state.selected === null && reply.campaigns.length) {
    const running = reply.campaigns.filter((c) => c.status === "running");
    await select((running.length ? running : reply.campaigns).at(-1).id);
  }
  schedule("campaigns", "approvals"); // a proposal names its campaign
}
async function loadExperiments(id) {
  const rows = [];
  let after = 0;
  for (;;) {
    const batch = (await call("experiments.list", { campaign_id: id, after_seq: after, limit: 5000 })).experiments;
    rows.push(...batch);
    if (batch.length < 5000) break;
    after = batch.at(-1).seq;
  }
  const byId = new Map(rows.map((e) => [e.id, e]));
  state.experiments.set(id, { rows, byId });
}
async function select(id) {
  state.selected = id;
  state.page = 0;
  state.experiment = null;
  if (!state.specs.has(id)) state.specs.set(id, (await call("campaign.show", { campaign_id: id })).spec);
  await loadExperiments(id);
  setupCoverageAxes();
  schedule("campaigns", "detail", "plots", "table");
}
let auditTimer = null;
function loadAuditSoon() {
  if (auditTimer !== null) return;
  auditTimer = setTimeout(async () => {
    auditTimer = null;
    try { state.audit = (await call("audit.list", { newest_first: true, limit: 200 })).entries.reverse(); schedule("audit"); } catch (e) { /* shown next time */ }
  }, 500);
}
let statusTimer = null;
function loadStatusSoon() {
  if (statusTimer !== null) return;
  statusTimer = setTimeout(() => { statusTimer = null; loadStatus().catch(() => {}); }, 150);
}
let campaignsTimer = null;
function loadCampaignsSoon() {
  if (campaignsTimer !== null) return;
  campaignsTimer = setTimeout(() => { campaignsTimer = null; loadCampaigns().catch(() => {}); }, 150);
}
// What needs a person: the inventory, tasks, proposals waiting for approval.
async function loadInventory() {
  state.stocks = (await call("inventory.list")).stocks;
  schedule("inventory", "tasks"); // a refill's inputs say the stock's unit, capacity and lot
}
async function loadTasks() {
  state.tasks = (await call("task.list")).tasks;
  schedule("tasks");
}
async function loadApprovals() {
  state.approvals = (await call("approval.list")).proposals;
  schedule("approvals");
}
const LOADERS = { inventory: loadInventory, tasks: loadTasks, approvals: loadApprovals };
// Each on its own: a panel the service cannot answer says why, and the rest of the page works.
async function loadPeople() {
  await Promise.all(Object.entries(LOADERS).map(([part, load]) => load().then(
    () => { delete state.unavailable[part]; },
    (e) => { state.unavailable[part] = e.message; schedule(part); },
  )));
}
const peopleTimers = new Map();
function loadSoon(part) {
  if (peopleTimers.has(part)) return;
  peopleTimers.set(part, setTimeout(() => { peopleTimers.delete(part); LOADERS[part]().catch(() => {}); }, 150));
}

// -- events ------------------------------------------------------------------------------------------------
function applyEvent(event) {
  if (event.seq <= state.lastSeq) return;
  state.lastSeq = event.seq;
  metrics.events += 1;
  if (eventAt === null) eventAt = performance.now();
  const topic = event.topic;
  const body = event.body || {};
  if (topic === "campaign.progress") {
    state.campaigns.set(body.id, body);
    schedule("campaigns", event.campaign_id === state.selected ? "detail" : "campaigns");
  } else if (topic.startsWith("experiment.")) {
    const known = state.experiments.get(event.campaign_id);
    if (known) {
      const row = known.byId.get(body.experiment_id) || { id: body.experiment_id, campaign_id: event.campaign_id, proposed_at: event.at };
      Object.assign(row, {
        seq: body.seq, status: body.status, recipe: body.recipe, measurements: body.measurements, loss: body.loss,
        failure: body.failure, cause: body.cause, fault_kind: body.fault_kind, fault_instrument: body.fault_instrument,
        workcell: body.workcell, decision: body.decision ?? row.decision ?? null,
      });
      if (!known.byId.has(row.id)) { known.byId.set(row.id, row); known.rows.push(row); if (known.rows.length > 1 && known.rows.at(-2).seq > row.seq) known.rows.sort((a, b) => a.seq - b.seq); }
      if (event.campaign_id === state.selected) schedule("plots", "table");
    }
    if (topic === "experiment.started" || FAILED.has(body.status) || body.status === "done") {
      loadStatusSoon();
      if (state.stocks.length) loadSoon("inventory"); // what experiments in flight claim, and used
    }
  } else if (topic === "campaign.submitted" || topic === "campaign.finished") {
    loadCampaignsSoon();
    loadStatusSoon();
  } else if (topic === "stock.changed") {
    loadSoon("inventory");
  } else if (topic.startsWith("task.")) {
    loadSoon("tasks");
    loadSoon("inventory"); // the stock's task
    loadStatusSoon(); // its alert, the workcells that wait for it
    if (topic === "task.opened") notifyTask(body);
  } else if (topic.startsWith("approval.")) {
    loadSoon("approvals");
  } else {
    loadStatusSoon(); // the lab: workcells, instruments, e-stop
  }
  if (topic !== "campaign.progress" && !topic.startsWith("experiment.")) loadAuditSoon();
  if (topic === "campaign.submitted" || topic === "lab.estop") loadAuditSoon();
}

function listen() {
  const source = new EventSource(`/api/events?since=${state.lastSeq}`);
  source.onopen = () => { $("live").textContent = "live"; $("live").className = "badge st-ok"; };
  source.onerror = () => { $("live").textContent = "reconnecting…"; $("live").className = "badge st-suspect"; };
  source.onmessage = (message) => applyEvent(JSON.parse(message.data));
}

// -- the header: who, the e-stop ---------------------------------------------------------------------------
function renderHeader() {
  const s = state.status;
  if (s) {
    $("lab-name").textContent = s.lab;
    $("lab-since").textContent = `service ${s.pid}, up since ${s.started_at}`;
    const banner = $("banner");
    banner.hidden = !s.estop.active;
    banner.textContent = s.estop.active ? `E-STOP ACTIVE: ${s.estop.reason} (by ${s.estop.by}, ${s.estop.at})` : "";
    const alerts = s.alerts ?? []; // what needs a person: a full disk, an instrument recovery gave up on
    $("alerts").hidden = alerts.length === 0;
    $("alerts").innerHTML = alerts.map((a) => `<div class="alert" data-key="${esc(a.key)}">ALERT (since ${esc(a.since)}): ${esc(a.message)}</div>`).join("");
    let controls = "";
    if (can("operator") && !s.estop.active) controls += `<button class="estop control" id="estop">E-STOP</button>`;
    if (can("admin") && s.estop.active) controls += `<button class="control" id="clear-estop">Clear e-stop</button>`;
    if ($("estop-area").dataset.html !== controls) { // unchanged: keep the button under the pointer
      $("estop-area").dataset.html = controls;
      $("estop-area").innerHTML = controls;
      $("estop")?.addEventListener("click", () => { const reason = prompt("E-stop: every instrument stops now. Reason?", "emergency stop from the dashboard"); if (reason !== null) call("lab.estop", { reason }).catch(showError); });
      $("clear-estop")?.addEventListener("click", () => { if (confirm("Let the lab take work again?")) call("lab.clear_estop").catch(showError); });
    }
  }
  const who = state.session;
  const key = JSON.stringify(who);
  if ($("who").dataset.session === key) return; // unchanged: keep a half-typed token as it is
  $("who").dataset.session = key;
  $("who").innerHTML = who.signed_in
    ? `${esc(who.name)} <span class="badge">${esc(who.role)}</span> <button id="signout">sign out</button>`
    : `${who.role ? `<span class="badge">${esc(who.role)}</span> ` : ""}<input id="token" type="password" placeholder="sign-in token" size="14"> <button id="signin">sign in</button>`;
  $("signout")?.addEventListener("click", async () => { await fetch("/api/signout", { method: "POST", credentials: "same-origin" }); location.reload(); });
  $("signin")?.addEventListener("click", signIn);
  $("token")?.addEventListener("keydown", (e) => { if (e.key === "Enter") signIn(); });
}
async function signIn() {
  const response = await fetch("/api/signin", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ token: $("token").value }), credentials: "same-origin" });
  const reply = await response.json();
  if (reply.error) { alert(reply.error.message); return; }
  location.reload();
}

// -- the lab -----------------------------------------------------------------------------------------------
function renderLab() {
  const s = state.status;
  if (!s) return;
  $("workcells").innerHTML = `<table><thead><tr><th>workcell</th><th>state</th><th>campaign</th><th>experiment</th><th>restarts</th></tr></thead><tbody>${s.workcells.map((w) => `<tr><td>${esc(w.name)}</td><td>${badge(w.state)}${w.blocked_by.length ? ` <span class="reason">${esc(w.blocked_by.join(", "))}</span>` : ""}</td><td>${esc(w.campaign_id ?? "")}</td><td class="num">${esc(w.experiment ?? "")}</td><td class="num">${w.restarts}</td></tr>`).join("")}</tbody></table>`;
  const admin = can("admin");
  $("instruments").innerHTML = `<table id="instrument-table"><thead><tr><th>instrument</th><th>state</th><th>leased to</th><th>faults</th>${admin ? "<th></th>" : ""}</tr></thead><tbody>${s.instruments.map((i) => `<tr data-instrument="${esc(i.name)}"><td>${esc(i.name)}<div class="muted">${esc(i.driver)}</div></td><td>${badge(i.state)}${i.reason ? `<div class="reason">${esc(i.reason)}</div>` : ""}</td><td>${i.leased_to ? `#${i.leased_to} (${esc(i.leased_by)})` : ""}</td><td class="num">${i.faults} (${i.consecutive_faults})</td>${admin ? `<td>${i.state === "ok" ? `<button class="control" data-quarantine="${esc(i.name)}">quarantine</button>` : `<button class="control" data-release="${esc(i.name)}">release</button>`}</td>` : ""}</tr>`).join("")}</tbody></table>`;
  $("instruments").querySelectorAll("[data-quarantine]").forEach((b) => b.addEventListener("click", () => { const reason = prompt(`Quarantine ${b.dataset.quarantine}: why?`); if (reason) call("instrument.quarantine", { name: b.dataset.quarantine, reason }).catch(showError); }));
  $("instruments").querySelectorAll("[data-release]").forEach((b) => b.addEventListener("click", () => call("instrument.release", { name: b.dataset.release }).then((r) => r.message && console.log(r.message)).catch(showError)));
  renderHeader();
}

// -- campaigns ---------------------------------------------------------------------------------------------
function timeLeft(c) {
  if (c.status !== "running") return c.finished_at ? `ended ${c.finished_at}` : "";
  if (c.max_wall_time) return `${Math.max(0, (c.max_wall_time - c.active_seconds) / 60).toFixed(1)} min left (wall-time limit)`;
  if (c.spent > 0) return `≈ ${((c.active_seconds / c.spent) * (c.budget - c.spent) / 60).toFixed(1)} min left at this pace`;
  return "";
}
function renderCampaigns() {
  const list = [...state.campaigns.values()].sort((a, b) => (a.status === "running") - (b.status === "running") || a.created_at.localeCompare(b.created_at)).reverse();
  $("campaigns").innerHTML = list.map((c) => {
    const front = c.front && c.front.length ? `Pareto front of ${c.front.length}: ${c.front.slice(0, 8).map((b) => `#${b.experiment}`).join(", ")}${c.front.length > 8 ? ", …" : ""}` : "";
    const best = c.best ? `best #${c.best.experiment}: ${esc(kv(c.best.objectives))}` : front || "no result yet";
    return `<div class="card${c.id === state.selected ? " selected" : ""}" data-campaign="${esc(c.id)}"><div class="title"><strong>${esc(c.name)}</strong>${badge(c.state)}</div>
      <div class="muted">${esc(c.id)} · by ${esc(c.submitted_by ?? "?")}</div>
      <div class="progress" title="${c.spent} of ${c.budget}"><div style="width:${Math.min(100, (100 * c.spent) / Math.max(1, c.budget))}%"></div></div>
      <div class="campaign-progress">${c.spent}/${c.budget} · ${esc(kv(c.counts))}</div><div>${best}</div><div class="muted">${esc(timeLeft(c))}${c.stop_reason ? ` · ${esc(c.stop_reason)}` : ""}</div></div>`;
  }).join("") || `<div class="muted">no campaigns yet</div>`;
  $("campaigns").querySelectorAll("[data-campaign]").forEach((card) => card.addEventListener("click", () => select(card.dataset.campaign).catch(showError)));
  renderSubmit();
}
function renderSubmit() {
  const area = $("submit-area");
  if (!can("operator")) { area.innerHTML = ""; return; }
  if (area.dataset.ready) return;
  area.dataset.ready = "1";
  area.innerHTML = `<h3>Submit a campaign</h3><div class="controls control"><input type="file" id="submit-file" accept=".yaml,.yml">
    <input type="text" id="submit-folder" placeholder="its folder on the lab's machine" size="24"><button class="control" id="submit">submit</button></div><div id="submit-result"></div>`;
  $("submit").addEventListener("click", async () => {
    const file = $("submit-file").files[0];
    if (!file) return;
    const folder = $("submit-folder").value.replace(/\/+$/, "");
    try {
      const reply = await call("campaign.submit", { text: await file.text(), path: folder ? `${folder}/${file.name}` : file.name });
      $("submit-result").innerHTML = `submitted <strong>${esc(reply.campaign_id)}</strong>`;
      await loadCampaigns();
      await select(reply.campaign_id);
    } catch (e) { showError(e, $("submit-result")); }
  });
}

// -- what needs a person: tasks, approvals, the inventory --------------------------------------------------
// Replace a list's HTML (if it changed) keeping what was typed in its inputs and where the cursor was, by
// the item (``key``: the attribute naming it) and the input's data-field.
function replaceKeeping(area, html, key) {
  if (area.dataset.html === html) return false; // unchanged: keep the buttons under the pointer as they are
  const name = (input) => `${input.closest(`[${key}]`)?.getAttribute(key)}/${input.dataset.field}`;
  const typed = new Map();
  let focused = null;
  area.querySelectorAll("[data-field]").forEach((i) => { typed.set(name(i), i.value); if (i === document.activeElement) focused = name(i); });
  area.dataset.html = html;
  area.innerHTML = html;
  area.querySelectorAll("[data-field]").forEach((i) => { if (typed.has(name(i))) i.value = typed.get(name(i)); if (name(i) === focused) i.focus(); });
  return true;
}

function renderInventory() {
  const area = $("inventory");
  if (state.unavailable.inventory) { area.innerHTML = `<div class="errors">${esc(state.unavailable.inventory)}</div>`; return; }
  if (!state.stocks.length) { area.innerHTML = `<div class="muted">no stocks (the lab file declares them: <code>inventory</code>)</div>`; return; }
  area.innerHTML = `<table id="inventory-table"><thead><tr><th>stock</th><th>amount</th><th>lot</th><th>task</th></tr></thead><tbody>${state.stocks.map((s) => {
    const stock = `${s.instrument}.${s.consumable}`;
    const held = `${amount(s.amount)}${s.capacity != null ? `/${amount(s.capacity)}` : ""} ${s.unit}`;
    const warn = s.warn_below != null ? `; LOW below ${amount(s.warn_below)} ${s.unit}` : "";
    const level = s.capacity ? `<div class="level${s.low ? " low" : ""}" title="${esc(`${held}${warn}`)}"><div class="fill" style="width:${percent(s.amount, s.capacity)}%"></div>${s.warn_below != null ? `<div class="mark" style="left:${percent(s.warn_below, s.capacity)}%"></div>` : ""}</div>` : "";
    const claimed = s.claimed > 0 ? `<div class="muted">${amount(s.claimed)} ${esc(s.unit)} still to be used by experiments in flight</div>` : "";
    return `<tr data-stock="${esc(stock)}"><td>${esc(stock)}${s.material ? `<div class="muted">${esc(s.material)}</div>` : ""}</td><td><span class="amount">${esc(held)}</span>${s.low ? ` <span class="badge st-low" title="less than ${esc(amount(s.warn_below))} ${esc(s.unit)} left">LOW</span>` : ""}${level}${claimed}</td><td>${esc(s.lot ?? "")}</td><td>${s.task != null ? `<a href="#task-${s.task}">task ${s.task}</a>` : ""}</td></tr>`;
  }).join("")}</tbody></table>`;
}

function renderTasks() {
  const area = $("tasks");
  const open = state.tasks.filter((t) => t.state === "open").length; // nobody has said they are on it
  document.title = open ? `(${open}) ${TITLE}` : TITLE;
  $("tasks-panel").classList.toggle("attention", open > 0);
  $("tasks-count").hidden = state.tasks.length === 0;
  $("tasks-count").textContent = String(state.tasks.length);
  $("tasks-count").className = `badge st-${open ? "open" : "acknowledged"}`;
  if (state.unavailable.tasks) { area.dataset.html = ""; area.innerHTML = `<div class="errors">${esc(state.unavailable.tasks)}</div>`; return; }
  const operator = can("operator");
  const html = state.tasks.map((t) => {
    const stock = t.kind === "refill" ? state.stocks.find((s) => s.instrument === t.instrument && s.consumable === t.consumable) : undefined;
    const on = t.state === "acknowledged" ? ` · acknowledged by ${esc(t.acknowledged_by)} at ${when(t.acknowledged_at)}` : "";
    let controls = "";
    if (operator) {
      const refill = stock ? `<input type="number" min="0" step="any" data-field="amount" placeholder="${esc(`${stock.unit} now${stock.capacity != null ? ` (${amount(stock.capacity)})` : ""}`)}" title="what it holds now (default: its capacity)">
        <input type="text" data-field="lot" size="10" placeholder="${esc(`lot${stock.lot ? ` (${stock.lot})` : ""}`)}" title="the lot it was filled from (default: the one it had)">` : "";
      controls = `<div class="controls control">${t.state === "open" ? `<button class="control" data-task-do="task.acknowledge">Acknowledge</button>` : ""}
        ${refill}<input type="text" data-field="note" size="12" placeholder="note"><button class="control" data-task-do="task.done">Done</button>
        <button class="control danger" data-task-do="task.cancel">Cancel</button></div>`;
    }
    return `<div class="item" id="task-${t.id}" data-task="${t.id}"><div class="title"><strong>task ${t.id}: ${esc(t.title)}</strong>${badge(t.state)}</div>
      ${t.detail ? `<div class="detail">${esc(t.detail)}</div>` : ""}
      <div class="muted">${t.workcell ? `workcell <strong>${esc(t.workcell)}</strong> waits · ` : ""}opened ${when(t.opened_at)} by ${esc(t.opened_by)}${on}</div>${controls}</div>`;
  }).join("") || `<div class="muted">no tasks to do</div>`;
  if (!replaceKeeping(area, html, "data-task")) return;
  area.querySelectorAll("[data-task-do]").forEach((b) => b.addEventListener("click", () => taskAction(b)));
}
async function taskAction(button) {
  const item = button.closest("[data-task]");
  const id = Number(item.dataset.task);
  const method = button.dataset.taskDo;
  const field = (name) => item.querySelector(`[data-field="${name}"]`);
  const params = { task_id: id };
  if (method === "task.done") {
    const given = field("amount");
    if (given && (given.validity.badInput || (given.value !== "" && !(Number(given.value) >= 0)))) {
      showError(new Error(`task ${id}: the amount must be a number, 0 or more (or empty: its capacity)`), $("tasks-result"));
      given.focus();
      return;
    }
    if (given && given.value !== "") params.amount = Number(given.value);
    const lot = field("lot")?.value.trim();
    if (lot) params.lot = lot;
  }
  if (method === "task.cancel") {
    const reason = prompt(`Cancel task ${id}: nobody will do it (the workcells waiting for it run again on what the record says is left). Why?`, field("note").value.trim());
    if (reason === null) return;
    if (reason.trim()) params.reason = reason.trim();
  } else if (method === "task.done" && field("note").value.trim()) {
    params.note = field("note").value.trim();
  }
  button.disabled = true;
  try {
    const t = await call(method, params);
    const o = t.outcome || {};
    const stock = o.amount !== undefined ? `: ${t.instrument}.${t.consumable} ${o.change === "replace" ? "replaced" : "refilled"} to ${amount(o.amount)} ${o.unit}${o.lot ? `, lot ${o.lot}` : ""}` : "";
    $("tasks-result").innerHTML = `<span class="muted">task ${t.id} ${esc(t.state)} by ${esc(t.closed_by ?? t.acknowledged_by)}${esc(stock)}</span>`;
    await loadTasks();
  } catch (e) { showError(e, $("tasks-result")); } finally { button.disabled = false; }
}
// A task opened while the page is open: its panel pulses (and stays outlined, and counted in the title,
// until someone acknowledges it), and the desktop is notified if this browser already allows it; the page
// never asks for that permission by itself (see renderNotify).
function notifyTask(body) {
  state.notified.push(body.id);
  const panel = $("tasks-panel");
  panel.classList.remove("attention");
  void panel.offsetWidth; // restart its pulse
  panel.classList.add("attention");
  if (!("Notification" in window) || Notification.permission !== "granted") return;
  try {
    new Notification(`${state.status?.lab ?? "lab"}: task ${body.id}`, { body: `${body.title}${body.detail ? `: ${body.detail}` : ""}`, tag: `sdl-task-${body.id}` });
  } catch (e) { /* a browser that notifies only from a service worker: the page itself still says it */ }
}
function renderNotify() {
  const ask = "Notification" in window && Notification.permission === "default";
  $("notify-area").innerHTML = ask ? `<button id="notify" title="a desktop notification when a task opens (the browser asks you first)">notify me</button>` : "";
  $("notify")?.addEventListener("click", () => Notification.requestPermission().then(renderNotify, renderNotify));
}

function renderApprovals() {
  const area = $("approvals");
  const waiting = state.approvals.filter((p) => p.state === "pending");
  $("approvals-panel").classList.toggle("attention", waiting.length > 0);
  $("approvals-count").hidden = waiting.length === 0;
  $("approvals-count").textContent = String(waiting.length);
  $("approvals-count").className = "badge st-pending";
  if (state.unavailable.approvals) { area.dataset.html = ""; area.innerHTML = `<div class="errors">${esc(state.unavailable.approvals)}</div>`; return; }
  const operator = can("operator");
  let html = waiting.map((p) => {
    const c = state.campaigns.get(p.campaign_id);
    const decide = operator ? `<div class="controls control"><input type="text" data-field="reason" size="18" placeholder="reason (needed to reject)">
      <button class="control" data-approval-do="approval.approve">Approve</button><button class="control danger" data-approval-do="approval.reject">Reject</button></div>` : "";
    return `<div class="item" data-proposal="${p.experiment_id}"><div class="title"><strong>${esc(c?.name ?? p.campaign_id)}: proposal ${p.seq}</strong>${badge(p.state)}</div>
      <div class="recipe" title="${esc(JSON.stringify(p.recipe))}">${esc(kv(p.recipe))}</div><div class="reason">${esc(p.why)}</div>
      <div class="muted">campaign ${esc(p.campaign_id)} · asked ${when(p.asked_at)}</div>${decide}</div>`;
  }).join("") || `<div class="muted">no proposals waiting</div>`;
  if (waiting.length && !operator) html += `<div class="muted">an operator approves or rejects them</div>`;
  if (!replaceKeeping(area, html, "data-proposal")) return;
  area.querySelectorAll("[data-approval-do]").forEach((b) => b.addEventListener("click", () => decide(b)));
}
async function decide(button) {
  const row = button.closest("[data-proposal]");
  const method = button.dataset.approvalDo;
  const input = row.querySelector('[data-field="reason"]');
  const reason = input.value.trim();
  if (method === "approval.reject" && !reason) {
    showError(new Error("say why you reject it: the reason is recorded as the experiment's failure"), $("approvals-result"));
    input.focus();
    return;
  }
  button.disabled = true;
  try {
    const p = await call(method, { experiment_id: Number(row.dataset.proposal), ...(reason ? { reason } : {}) });
    $("approvals-result").innerHTML = `<span class="muted">proposal ${p.seq} of ${esc(p.campaign_id)} ${esc(p.state)} by ${esc(p.decided_by)}${p.reason ? `: ${esc(p.reason)}` : ""}</span>`;
    await loadApprovals();
  } catch (e) { showError(e, $("approvals-result")); } finally { button.disabled = false; }
}

// -- one campaign ------------------------------------------------------------------------------------------
function renderDetail() {
  const c = state.campaigns.get(state.selected);
  if (!c) { $("detail-title").textContent = "Campaign"; return; }
  $("detail-title").innerHTML = `${esc(c.name)} ${badge(c.state)} <span class="muted">${esc(c.id)}</span>`;
  let html = "";
  if (can("operator") && c.status === "running") {
    html += c.state === "paused" ? `<button class="control" data-do="campaign.resume">resume</button>` : `<button class="control" data-do="campaign.pause">pause</button>`;
    html += `<button class="control" data-do="campaign.stop">stop</button><button class="control danger" data-do="campaign.abort">abort</button>`;
  } else if (can("operator") && c.status !== "completed") {
    html += `<button class="control" data-do="campaign.resume">resume</button>`;
  }
  html += ` <a href="/api/export/${encodeURIComponent(c.id)}.csv" download><button>CSV</button></a> <a href="/api/export/${encodeURIComponent(c.id)}.jsonl" download><button>JSONL</button></a>`;
  const controls = $("detail-controls");
  if (controls.dataset.html === html) return; // unchanged: keep the buttons under the pointer as they are
  controls.dataset.html = html;
  controls.innerHTML = `<div class="controls">${html}</div><div id="control-result"></div>`;
  controls.querySelectorAll("[data-do]").forEach((b) => b.addEventListener("click", async () => {
    const method = b.dataset.do;
    if (method === "campaign.abort" && !confirm("Abort now: every moving device is stopped and the experiments in flight are lost.")) return;
    try { const r = await call(method, { campaign_id: c.id }); $("control-result").innerHTML = `<span class="muted">${esc(method)}: ${esc(r.state)}</span>`; } catch (e) { showError(e, $("control-result")); }
  }));
}

function loss(e) { return typeof e.loss === "number" && Number.isFinite(e.loss) ? e.loss : null; }

function setupCanvas(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = Math.max(200, Math.round(canvas.clientWidth * ratio));
  const height = Math.max(120, Math.round(canvas.clientHeight * ratio));
  if (canvas.width !== width || canvas.height !== height) { canvas.width = width; canvas.height = height; }
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, width, height);
  g.font = `${Math.round(11 * ratio)}px system-ui, sans-serif`;
  return { g, width, height, ratio };
}

function renderPlots() { renderConvergence(); renderCoverage(); }

function renderConvergence() {
  const canvas = $("convergence");
  const known = state.experiments.get(state.selected);
  const rows = known ? known.rows : [];
  const { g, width, height, ratio } = setupCanvas(canvas);
  const pad = { l: 48 * ratio, r: 10 * ratio, t: 10 * ratio, b: 22 * ratio };
  const finished = rows.filter((e) => loss(e) !== null || FAILED.has(e.status));
  canvas.dataset.experiments = String(finished.length);
  if (!rows.length) { canvas.dataset.drawn = "0"; return; }
  const values = finished.map(loss).filter((v) => v !== null);
  const maxSeq = Math.max(rows.at(-1).seq, 2);
  let lo = values.length ? Math.min(...values) : 0, hi = values.length ? Math.max(...values) : 1;
  if (hi - lo < 1e-12) { hi += 0.5; lo -= 0.5; }
  const x = (seq) => pad.l + ((seq - 1) / (maxSeq - 1)) * (width - pad.l - pad.r);
  const y = (v) => pad.t + (1 - (v - lo) / (hi - lo)) * (height - pad.t - pad.b);
  g.strokeStyle = "#2a3540"; g.fillStyle = "#8b98a5"; g.lineWidth = 1;
  for (let i = 0; i <= 4; i++) { const v = lo + ((hi - lo) * i) / 4; g.beginPath(); g.moveTo(pad.l, y(v)); g.lineTo(width - pad.r, y(v)); g.stroke(); g.fillText(fmt(v), 2, y(v) + 4 * ratio); }
  g.fillText(`experiment (1–${rows.at(-1).seq})`, pad.l, height - 5 * ratio);
  // Decimation: per pixel column, only the lowest and highest loss (and one failure mark) are drawn.
  const columns = new Map();
  for (const e of finished) {
    const px = Math.round(x(e.seq));
    let col = columns.get(px);
    if (!col) { col = { min: null, max: null, fail: null }; columns.set(px, col); }
    const v = loss(e);
    if (v === null) { col.fail = e; continue; }
    if (col.min === null || v < loss(col.min)) col.min = e;
    if (col.max === null || v > loss(col.max)) col.max = e;
  }
  let drawn = 0;
  g.fillStyle = "#58a6ff";
  const r = 2.5 * ratio;
  for (const [px, col] of columns) {
    for (const e of new Set([col.min, col.max])) { if (e) { g.beginPath(); g.arc(px, y(loss(e)), r, 0, 2 * Math.PI); g.fill(); drawn++; } }
  }
  g.strokeStyle = "#f85149"; g.lineWidth = 1.5 * ratio;
  for (const [px, col] of columns) {
    if (!col.fail) continue;
    const py = height - pad.b - 6 * ratio;
    g.beginPath(); g.moveTo(px - r, py - r); g.lineTo(px + r, py + r); g.moveTo(px + r, py - r); g.lineTo(px - r, py + r); g.stroke(); drawn++;
  }
  // best so far: a step line over every done experiment (one vertex per improvement)
  g.strokeStyle = "#3fb950"; g.lineWidth = 2 * ratio; g.beginPath();
  let best = null;
  for (const e of rows) {
    const v = loss(e);
    if (v === null || e.status !== "done") continue;
    if (best === null) { best = v; g.moveTo(x(e.seq), y(v)); } else if (v < best) { g.lineTo(x(e.seq), y(best)); best = v; g.lineTo(x(e.seq), y(v)); }
  }
  if (best !== null) { g.lineTo(x(rows.at(-1).seq), y(best)); g.stroke(); }
  canvas.dataset.drawn = String(drawn);
}

function parameters() {
  const spec = state.specs.get(state.selected);
  return spec && Array.isArray(spec.parameters) ? spec.parameters : [];
}
function setupCoverageAxes() {
  const names = parameters().map((p) => p.name);
  for (const [id, index] of [["cov-x", 0], ["cov-y", 1]]) {
    const select = $(id);
    select.innerHTML = names.map((n) => `<option>${esc(n)}</option>`).join("");
    select.value = names[Math.min(index, names.length - 1)] ?? "";
    select.onchange = () => schedule("plots");
  }
}
function axis(parameter, rows) {
  if (parameter && typeof parameter.low === "number" && typeof parameter.high === "number") {
    const log = parameter.log && parameter.low > 0;
    const f = (v) => (log ? Math.log(v) : v);
    const lo = f(parameter.low), hi = f(parameter.high);
    return (v) => (typeof v === "number" ? (f(v) - lo) / (hi - lo || 1) : null);
  }
  const choices = parameter && Array.isArray(parameter.choices) ? parameter.choices.map(String) : [...new Set(rows.map((e) => String(e.recipe?.[parameter?.name])))];
  return (v) => { const i = choices.indexOf(String(v)); return i < 0 ? null : (i + 0.5) / choices.length; };
}
function renderCoverage() {
  const canvas = $("coverage");
  const known = state.experiments.get(state.selected);
  const rows = known ? known.rows : [];
  const { g, width, height, ratio } = setupCanvas(canvas);
  const params = parameters();
  const px = params.find((p) => p.name === $("cov-x").value), py = params.find((p) => p.name === $("cov-y").value);
  if (!px || !py || !rows.length) { canvas.dataset.drawn = "0"; return; }
  const fx = axis(px, rows), fy = axis(py, rows);
  const pad = 24 * ratio;
  const values = rows.map(loss).filter((v) => v !== null);
  const lo = values.length ? Math.min(...values) : 0, hi = values.length ? Math.max(...values) : 1;
  g.strokeStyle = "#2a3540"; g.strokeRect(pad, pad / 2, width - 1.5 * pad, height - 1.5 * pad);
  g.fillStyle = "#8b98a5"; g.fillText(px.name, pad, height - 4 * ratio);
  g.save(); g.translate(12 * ratio, height / 2); g.rotate(-Math.PI / 2); g.fillText(py.name, 0, 0); g.restore();
  // Decimation: one mark per 3x3-pixel cell, the best experiment in it.
  const cells = new Map();
  const cell = 3 * ratio;
  for (const e of rows) {
    const u = fx(e.recipe?.[px.name]), v = fy(e.recipe?.[py.name]);
    if (u === null || v === null) continue;
    const cx = pad + u * (width - 1.5 * pad), cy = pad / 2 + (1 - v) * (height - 1.5 * pad);
    const key = `${Math.floor(cx / cell)},${Math.floor(cy / cell)}`;
    const had = cells.get(key);
    if (!had || (loss(e) !== null && (loss(had.e) === null || loss(e) < loss(had.e)))) cells.set(key, { e, cx, cy });
  }
  for (const { e, cx, cy } of cells.values()) {
    const v = loss(e);
    if (v === null) { g.fillStyle = FAILED.has(e.status) ? "#f85149" : "#8b98a5"; } else {
      const t = hi > lo ? (v - lo) / (hi - lo) : 0; // good (low loss) is bright yellow, bad is dark blue
      g.fillStyle = `hsl(${Math.round(60 + 170 * t)}, 85%, ${Math.round(60 - 25 * t)}%)`;
    }
    g.beginPath(); g.arc(cx, cy, 3 * ratio, 0, 2 * Math.PI); g.fill();
  }
  canvas.dataset.drawn = String(cells.size);
}

function renderTable() {
  const known = state.experiments.get(state.selected);
  const rows = known ? known.rows : [];
  const pages = Math.max(1, Math.ceil(rows.length / PAGE));
  state.page = Math.min(state.page, pages - 1);
  const end = rows.length - state.page * PAGE, start = Math.max(0, end - PAGE);
  const shown = rows.slice(start, end).reverse();
  const pager = `<div class="pager"><button id="newer" ${state.page === 0 ? "disabled" : ""}>newer</button> page ${state.page + 1} of ${pages} (${rows.length} experiments) <button id="older" ${state.page >= pages - 1 ? "disabled" : ""}>older</button></div>`;
  $("experiments").innerHTML = `${pager}<table id="experiment-table"><thead><tr><th>#</th><th>status</th><th>workcell</th><th>recipe</th><th>measurements</th><th>loss</th><th>failure</th><th>decision</th></tr></thead><tbody>${shown.map((e) => {
    const d = e.decision;
    const decision = d ? `${esc(d.model)}${d.acquisition ? ` / ${esc(d.acquisition)}` : ""} · ${fmt(d.seconds)} s` : "";
    const failure = e.failure ? `${esc(e.cause ?? "")}${e.fault_kind ? ` (${esc(e.fault_kind)}${e.fault_instrument ? ` on ${esc(e.fault_instrument)}` : ""})` : ""}: ${esc(e.failure)}` : "";
    return `<tr class="clickable${state.experiment?.experiment.id === e.id ? " selected" : ""}" data-experiment="${e.id}"><td class="num">${e.seq}</td><td>${badge(e.status)}</td><td>${esc(e.workcell ?? "")}</td><td class="wrap" title="${esc(kv(e.recipe))}">${esc(kv(e.recipe))}</td><td class="wrap" title="${esc(kv(e.measurements))}">${esc(kv(e.measurements))}</td><td class="num">${fmt(e.loss)}</td><td class="wrap" title="${esc(e.failure ?? "")}">${failure}</td><td>${decision}</td></tr>`;
  }).join("")}</tbody></table>`;
  $("newer")?.addEventListener("click", () => { state.page = Math.max(0, state.page - 1); schedule("table"); });
  $("older")?.addEventListener("click", () => { state.page += 1; schedule("table"); });
  $("experiments").querySelectorAll("[data-experiment]").forEach((tr) => tr.addEventListener("click", () => showExperiment(Number(tr.dataset.experiment))));
}

async function showExperiment(id) {
  try { state.experiment = await call("experiment.show", { experiment_id: id, documents: true }); } catch (e) { showError(e, $("experiment-detail")); return; }
  const { experiment: e, journal, documents } = state.experiment;
  const docs = (documents || []).map(([name, doc]) => `<details><summary>${esc(name)} ${esc(doc.uid ?? "")}</summary><pre>${esc(JSON.stringify(doc, null, 1).slice(0, 20000))}</pre></details>`).join("");
  $("experiment-detail").innerHTML = `<h3>Experiment #${e.seq} ${badge(e.status)}</h3>
    <div class="muted">proposed ${esc(e.proposed_at)} · started ${esc(e.started_at ?? "")} · finished ${esc(e.finished_at ?? "")}</div>
    <h4>Command journal (${journal.length})</h4><table><thead><tr><th>at</th><th>entry</th><th>command</th><th>instrument</th><th>detail</th></tr></thead><tbody>${journal.map((j) => `<tr><td class="num">${new Date(j.at * 1000).toISOString().slice(11, 23)}</td><td>${esc(j.entry)}</td><td>${esc(j.command)}</td><td>${esc(j.instrument ?? j.device ?? "")}</td><td class="wrap" title="${esc(j.detail ?? "")}">${esc(j.detail ?? "")}</td></tr>`).join("")}</tbody></table>
    <h4>Documents (${(documents || []).length})</h4>${docs}`;
  schedule("table");
}

// -- the audit log -----------------------------------------------------------------------------------------
function renderAudit() {
  $("audit").innerHTML = `<table id="audit-table"><thead><tr><th>at</th><th>who</th><th>action</th><th>target</th><th>result</th></tr></thead><tbody>${state.audit.slice().reverse().slice(0, 100).map((a) => `<tr><td>${esc(a.at.slice(11, 19))}</td><td>${esc(a.who)}<div class="muted">${esc(a.origin ?? "")}</div></td><td>${esc(a.action)}</td><td>${esc(a.target ?? "")}</td><td class="${a.result === "ok" ? "" : "reason"}">${esc(a.result)}</td></tr>`).join("")}</tbody></table>`;
}

// -- start -------------------------------------------------------------------------------------------------
async function start() {
  if (new URLSearchParams(location.search).has("wall")) document.body.classList.add("wall");
  await loadSession();
  if (state.session.role === null) {
    renderHeader();
    $("grid").innerHTML = `<section class="panel"><h2>Sign in</h2><p>Open the sign-in URL the lab service printed when it started (its owner also finds the token in <code>DATA_DIR/keys/owner.token</code>), or sign in with a token from the lab's admin (<code>sdl keys token NAME --key FILE</code>).</p></section>`;
    document.body.dataset.ready = "1";
    return;
  }
  const since = (await call("events.since", { seq: 0, limit: 1 })).last;
  state.lastSeq = since;
  listen(); // from `since`: nothing that happens while the page loads is lost
  await Promise.all([loadStatus(), loadCampaigns(), loadPeople()]);
  state.audit = (await call("audit.list", { newest_first: true, limit: 200 })).entries.reverse();
  renderNotify();
  schedule("header", "lab", "campaigns", "detail", "plots", "table", "audit", "inventory", "tasks", "approvals");
  await new Promise((resolve) => requestAnimationFrame(() => { flush(); resolve(); }));
  metrics.firstRender = performance.now();
  document.body.dataset.ready = "1";
}
window.addEventListener("resize", () => schedule("plots"));
start().catch((e) => { document.body.dataset.error = e.message; console.error(e); });
