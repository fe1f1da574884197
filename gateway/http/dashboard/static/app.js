// The OTA Gateway dashboard: polls dashboard/state (every 2 s) and dashboard/devices (every 5 s
// and on each filter change) and puts the server's text on screen. No framework, no build step.
// Every string from the server is escaped here, except the charts, which the server draws as SVG
// with its own text escaped. Gate controls post same-origin JSON with this page's token.
"use strict";

const STATE_EVERY_MS = 2000;
const DEVICES_EVERY_MS = 5000;
const csrf = document.querySelector('meta[name="ota-csrf"]').content;
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const shown = new Map(); // element id -> the HTML last put there (unchanged parts are not redrawn)

function put(id, html) {
  if (shown.get(id) === html) return;
  shown.set(id, html);
  $(id).innerHTML = html;
}

function kv(rows) {
  return rows.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join("");
}

function verdicts(list, cls) {
  return list.map((v) => {
    const figs = [`candidate ${v.candidate}`];
    if (v.baseline) figs.push(`baseline ${v.baseline}`);
    if (v.limit) figs.push(`limit ${v.limit}`);
    const said = v.words ? esc(v.words) : `<b>${esc(v.criterion)}</b>: ${esc(v.result)} — ${esc(figs.join(", "))}`;
    return `<li class="${cls}">${said}` + (v.e_value ? ` <span class="muted">e-value ${esc(v.e_value)}</span>` : "") +
      (v.samples ? ` <span class="muted">(${esc(v.samples)})</span>` : "") +
      (v.note ? ` <span class="muted">${esc(v.note)}</span>` : "") + "</li>";
  }).join("");
}

function timeline(entries) {
  if (!entries.length) return '<p class="muted">No decision yet.</p>';
  return '<ol class="timeline">' + entries.map((e) => {
    const cls = e.control ? "control" : (e.action === "halt" || e.action === "abort" ? "bad" : "");
    let html = `<li class="${cls}" data-action="${esc(e.action)}"><div class="when">${esc(e.when)} · wave ${esc(e.wave)}</div>` +
      `<div><b>${esc(e.what)}</b> by ${esc(e.by)}${e.reason ? ": " + esc(e.reason) : ""}</div>`;
    if (e.failed.length) html += `<ul class="verdicts">${verdicts(e.failed, "fail")}</ul>`;
    if (e.verdicts.length) html += `<details data-key="${esc(e.key)}"><summary>${e.verdicts.length} other criteria</summary><ul class="verdicts">${verdicts(e.verdicts, "")}</ul></details>`;
    return html + "</li>";
  }).join("") + "</ol>";
}

function charts(list) {
  return '<div class="charts">' + list.map((c) => `<figure class="chart-box">${c.svg}</figure>`).join("") + "</div>";
}

function agreement(a) {
  if (!a) return "";
  const cls = (row) => (row.below ? "bad" : "");
  const classes = a.classes.map((c) =>
    `<tr class="${cls(c)}"><td>${esc(c.class)}</td><td>${esc(c.agreement)}</td><td class="muted">${esc(c.frames)} frames</td></tr>`).join("");
  const pairs = a.pairs.map((p) => `<li>${esc(p.pair)} <span class="muted">${esc(p.frames)} frames</span></li>`).join("");
  return `<h4>Shadow agreement</h4><p class="${cls(a)}">agreement with the active model on the same frames: ` +
    `<b>${esc(a.overall)}</b> <span class="muted">(minimum ${esc(a.minimum)}; ${esc(a.frames)} frames, ${esc(a.windows)} windows)</span></p>` +
    (classes ? `<table class="agreement"><caption>per class (minimum ${esc(a.class_minimum)})</caption>${classes}</table>` : "") +
    (pairs ? `<p>Top confusion pairs (active → candidate):</p><ol class="pairs">${pairs}</ol>` : "");
}

function gateParts(g) {
  const waves = g.waves.map((w) =>
    `<li class="wave ${esc(w.state.replace(/ /g, "-"))}"><b>${esc(w.wave)}</b> ${esc(w.share)}<br>` +
    `<span>${esc(w.admitted)} in</span><br><span class="muted">${esc(w.state)}</span></li>`).join("");
  const buttons = g.controls.map((a) =>
    `<button type="button" class="control ${a === "abort" ? "danger" : ""}" data-gate="${esc(g.deployment)}" data-action="${esc(a)}">${esc(a)}</button>`).join("");
  return {
    head: `<h3>${esc(g.deployment)} <span class="pill stage">${esc(g.held ? "held" : g.stage)}</span></h3>` +
      `<p class="stage-text">${esc(g.stage_text)}</p>` +
      `<p class="muted">baseline ${esc(g.baseline)} · ${esc(g.summary)}</p>` +
      (g.last ? `<p>Last: ${esc(g.last)} <span class="muted">(${esc(g.last_when)})</span></p>` : ""),
    waves: `<ol class="waves">${waves}</ol><div class="buttons">${buttons}</div>`,
    charts: charts(g.charts) +
      `<p class="legend"><span class="c-cand">— ${esc(g.version)} (candidate)</span> <span class="c-base">— ${esc(g.baseline)} (baseline)</span> <span class="c-limit">- - limits</span> <span class="muted">one point per ${esc(windowText)} window</span></p>`,
    agreement: agreement(g.agreement),
    timeline: `<h4>Timeline</h4>${timeline(g.timeline)}`,
  };
}

const drawn = new WeakMap(); // element -> the HTML last put there
function fill(el, html) {
  if (drawn.get(el) === html) return;
  const open = new Set([...el.querySelectorAll("details[open]")].map((d) => d.dataset.key));
  drawn.set(el, html);
  el.innerHTML = html;
  for (const d of el.querySelectorAll("details")) if (open.has(d.dataset.key)) d.open = true;
}

let windowText = "";
function gates(list) {
  const box = $("gates");
  if (!list.length) {
    put("gates", '<p class="muted">No gate yet: a new model version opens one when its index arrives.</p>');
    return;
  }
  if (shown.has("gates")) { shown.delete("gates"); box.innerHTML = ""; }
  const keep = new Set(list.map((g) => g.deployment));
  for (const el of [...box.children]) if (!keep.has(el.dataset.gate)) el.remove();
  list.forEach((g, i) => {
    let el = [...box.children].find((c) => c.dataset.gate === g.deployment);
    if (!el) {
      el = document.createElement("article");
      el.dataset.gate = g.deployment;
      el.innerHTML = '<div class="g-head"></div><div class="g-waves"></div><div class="g-charts"></div><div class="g-agreement"></div><div class="g-timeline"></div>';
      box.appendChild(el);
    }
    if (box.children[i] !== el) box.insertBefore(el, box.children[i]);
    el.className = `card gate stage-${g.stage}${g.held ? " held" : ""}`;
    el.dataset.stage = g.stage;
    el.dataset.held = g.held ? "yes" : "no";
    const parts = gateParts(g);
    for (const k of Object.keys(parts)) fill(el.querySelector(".g-" + k), parts[k]);
  });
}

function mirror(rows) {
  if (!rows.length) return '<p class="muted">Nothing to mirror: no deployment in the index.</p>';
  return rows.map((m) =>
    `<div class="mirror"><div><b>${esc(m.name)}</b> <span class="muted">${esc(m.text)}</span></div>` +
    `<progress max="${m.total || 1}" value="${m.done}"></progress></div>`).join("");
}

let lastOk = 0;
function live(ok, text) {
  const el = $("live");
  el.className = "pill " + (ok ? "ok" : "bad");
  el.textContent = text;
}

function render(s) {
  document.title = `OTA Gateway ${s.site}`;
  $("site").textContent = `OTA Gateway · ${s.site}`;
  put("alerts", s.alerts.map((a) => `<li>${esc(a)}</li>`).join(""));
  put("summary", kv(s.summary));
  windowText = s.window;
  gates(s.gates);
  $("versions-section").hidden = !s.versions.length;
  put("versions", s.versions.map((v) => `<article class="card"><h3>${esc(v.name)}</h3>${charts(v.charts)}</article>`).join(""));
  $("drift-section").hidden = !s.drift.length;
  put("drift", charts(s.drift));
  put("mirror", mirror(s.mirroring));
  put("uplink", kv(s.uplink));
  $("samples-section").hidden = !s.samples.length;
  put("samples", kv(s.samples));
  put("health", kv(s.box));
  $("errors-section").hidden = !s.errors.length;
  put("errors", kv(s.errors));
}

async function pollState() {
  try {
    const r = await fetch("dashboard/state", { cache: "no-store" });
    if (!r.ok) throw new Error(`${r.status} ${await r.text()}`);
    render(await r.json());
    lastOk = Date.now();
    live(true, "live");
  } catch (err) {
    live(false, lastOk ? `no answer for ${Math.round((Date.now() - lastOk) / 1000)} s` : "no answer");
  }
  setTimeout(pollState, STATE_EVERY_MS);
}

// -- devices ---------------------------------------------------------------------------------------

const filters = ["q", "version", "cohort", "state", "seen", "blocked"];
let offset = 0;
let pageSize = 50;
let devicesTimer = 0;

function options(id, facet, label) {
  const sel = $(id);
  const keep = sel.value;
  const html = `<option value="">${esc(label)}</option>` +
    facet.map(([v, n]) => `<option value="${esc(v)}">${esc(v)} (${n})</option>`).join("");
  if (shown.get(id) !== html) {
    shown.set(id, html);
    sel.innerHTML = html;
    sel.value = keep;
    if (sel.value !== keep) { // the chosen value has no device left: keep it selectable
      sel.insertAdjacentHTML("beforeend", `<option value="${esc(keep)}">${esc(keep)} (0)</option>`);
      sel.value = keep;
    }
  }
}

function deviceRow(d) {
  const cells = [["Device", d.id], ["Model", d.model], ["Cohort", d.cohort], ["Firmware", d.firmware],
    ["State", d.state + (d.blocked ? ` (${d.blocked})` : "")], ["Last seen", d.last_seen], ["Last event", d.last_event]];
  return `<tr data-device="${esc(d.id)}">` + cells.map(([k, v]) => `<td data-label="${esc(k)}">${esc(v)}</td>`).join("") + "</tr>";
}

async function pollDevices() {
  clearTimeout(devicesTimer);
  const q = new URLSearchParams();
  for (const f of filters) { const v = $("f-" + f).value.trim(); if (v) q.set(f, v); }
  q.set("offset", String(offset));
  q.set("limit", String(pageSize));
  try {
    const r = await fetch("dashboard/devices?" + q, { cache: "no-store" });
    if (!r.ok) throw new Error(await r.text());
    const d = await r.json();
    options("f-version", d.facets.version, "any version");
    options("f-cohort", d.facets.cohort, `any cohort (${d.cohort_attribute})`);
    options("f-state", d.facets.state, "any state");
    put("device-rows", d.devices.length ? d.devices.map(deviceRow).join("") :
      '<tr><td colspan="7" class="muted">No device matches.</td></tr>');
    $("device-count").textContent = `${d.total} of ${d.known} shown by the filters` + (d.facets.blocked ? `, ${d.facets.blocked} blocked by firmware` : "");
    $("page").textContent = d.total ? `${d.offset + 1}–${d.offset + d.devices.length} of ${d.total}` : "";
    $("prev").disabled = d.offset === 0;
    $("next").disabled = d.offset + d.devices.length >= d.total;
  } catch (err) {
    $("device-count").textContent = "could not load: " + err.message;
  }
  devicesTimer = setTimeout(pollDevices, DEVICES_EVERY_MS);
}

let typing = 0;
for (const f of filters) {
  $("f-" + f).addEventListener(f === "q" ? "input" : "change", () => {
    offset = 0;
    clearTimeout(typing);
    typing = setTimeout(pollDevices, f === "q" ? 250 : 0);
  });
}
$("prev").addEventListener("click", () => { offset = Math.max(0, offset - pageSize); pollDevices(); });
$("next").addEventListener("click", () => { offset += pageSize; pollDevices(); });

// -- gate controls -----------------------------------------------------------------------------------

const EXPLAIN = {
  hold: "The waves stop where they are; devices keep what they run. Release resumes.",
  release: "The rollout resumes (a halted gate re-opens at its wave).",
  approve: "The wave that passed opens the next one.",
  abort: "FINAL: the candidate is offered to nobody again and its devices roll back.",
};
let pending = null;

function toast(text, bad) {
  const t = $("toast");
  t.textContent = text;
  t.className = bad ? "bad" : "ok";
  t.hidden = false;
  clearTimeout(t.timer);
  t.timer = setTimeout(() => { t.hidden = true; }, 6000);
}

document.addEventListener("click", (ev) => {
  const b = ev.target.closest("button.control");
  if (!b) return;
  pending = { gate: b.dataset.gate, action: b.dataset.action };
  $("confirm-title").textContent = `${pending.action} ${pending.gate}?`;
  $("confirm-text").textContent = EXPLAIN[pending.action] || "";
  $("confirm-who").value = localStorage.getItem("ota-who") || "";
  $("confirm-why").value = "";
  $("confirm-ok").textContent = pending.action;
  $("confirm-ok").className = pending.action === "abort" ? "danger" : "primary";
  $("confirm").showModal();
  $("confirm-why").focus();
});
$("confirm-cancel").addEventListener("click", () => { pending = null; $("confirm").close(); });

$("confirm-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const why = $("confirm-why").value.trim();
  if (!pending || !why) return;
  const who = $("confirm-who").value.trim() || "dashboard";
  localStorage.setItem("ota-who", who);
  const { gate, action } = pending;
  pending = null;
  $("confirm").close();
  try {
    const r = await fetch(`gates/${encodeURIComponent(gate)}/${action}`, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-OTA-CSRF": csrf },
      body: JSON.stringify({ who, why }),
    });
    toast(r.ok ? `${action} ${gate}: done` : `${action} refused (${r.status}): ${(await r.text()).trim()}`, !r.ok);
  } catch (err) {
    toast(`${action} failed: ${err.message}`, true);
  }
  shown.clear();
});

pollState();
pollDevices();
