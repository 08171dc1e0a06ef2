// tiercache dashboard: polls /ui/api/status, keeps the last hour of its history, and draws it as
// SVG. No framework; everything from the server is inserted as text, never as HTML.
"use strict";

const POLL_MS = 2000;
const WINDOW_MS = 3600 * 1000;
const TIERS = ["memory", "disk", "shared", "source"];
// Each series is told apart by its dash pattern and label as well as its colour.
const DASH = { memory: "", disk: "6 3", shared: "2 3", source: "9 3 2 3", a: "", b: "6 3", c: "2 3" };

const state = {
  history: null, // arrays by name, as /ui/api/status sends them, appended to
  last: null, // the latest status
  sort: { key: "name", dir: 1 },
  busy: false,
};

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) e.setAttribute(k, v);
  return e;
}

// ---- formatting ------------------------------------------------------------------------------

function bytes(n) {
  if (n === null || n === undefined || !isFinite(n)) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return i === 0 ? `${Math.round(n)} B` : `${n.toFixed(n < 10 ? 2 : 1)} ${units[i]}`;
}
const perSecond = (n) => (n === null || n === undefined ? "–" : n >= 100 ? n.toFixed(0) : n.toFixed(n >= 10 ? 1 : 2));
const pct = (x) => (x === null || x === undefined || !isFinite(x) ? "–" : `${(x * 100).toFixed(1)}%`);
const ms = (x) => (x === null || x === undefined ? "–" : x >= 100 ? `${x.toFixed(0)} ms` : `${x.toFixed(1)} ms`);
function ago(tMs, nowMs) {
  if (!tMs) return "–";
  const s = Math.max(0, Math.round((nowMs - tMs) / 1000));
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 172800) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}
const clock = (tMs) => new Date(tMs).toLocaleTimeString([], { hour12: false });
function duration(s) {
  if (s === null || s === undefined) return "–";
  if (s < 90) return `${s.toFixed(0)} s`;
  if (s < 5400) return `${(s / 60).toFixed(0)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

// ---- history ---------------------------------------------------------------------------------

// Appends the new intervals of `h` to the kept history and drops what is older than an hour.
function merge(h) {
  if (!h) return;
  if (!state.history) {
    state.history = h;
  } else {
    const into = state.history;
    const add = (a, b) => { for (const x of b) a.push(x); };
    add(into.t_ms, h.t_ms);
    for (const k of Object.keys(h)) {
      if (k === "t_ms" || k === "interval_seconds") continue;
      if (Array.isArray(h[k][0])) h[k].forEach((arr, i) => add(into[k][i], arr));
      else add(into[k], h[k]);
    }
  }
  const cut = Date.now() - WINDOW_MS;
  const into = state.history;
  let drop = 0;
  while (drop < into.t_ms.length && into.t_ms[drop] < cut) drop++;
  if (drop > 0) {
    into.t_ms.splice(0, drop);
    for (const k of Object.keys(into)) {
      if (k === "t_ms" || k === "interval_seconds") continue;
      if (Array.isArray(into[k][0])) into[k].forEach((arr) => arr.splice(0, drop));
      else into[k].splice(0, drop);
    }
  }
}

const sum = (a) => a.reduce((x, y) => x + (y || 0), 0);
const lastOf = (a) => (a && a.length ? a[a.length - 1] : null);

// ---- charts ----------------------------------------------------------------------------------

// A line (or stacked area) chart of `series`, in a fixed box (no layout shift), drawn at the
// box's own size so that its text is not stretched. The time axis spans the last hour, or less
// while the history is younger. series: [{name, cls, values}]; values may hold null (a gap).
function chart(box, { t, series, max, format, stacked = false }) {
  const W = Math.max(200, Math.round(box.clientWidth || 600));
  const H = Math.max(60, Math.round(box.clientHeight || 170));
  const pad = { l: 52, r: 8, t: 6, b: 16 };
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" });
  const now = state.last ? state.last.now_ms : Date.now();
  const step = (state.history && state.history.interval_seconds ? state.history.interval_seconds : 2) * 1000;
  const t0 = t.length ? Math.max(now - WINDOW_MS, t[0] - step) : now - WINDOW_MS;
  const span = Math.max(step, now - t0);
  const x = (tm) => pad.l + ((tm - t0) / span) * (W - pad.l - pad.r);
  let top = max;
  const stack = [];
  if (stacked) {
    let acc = t.map(() => 0);
    for (const s of series) {
      const lo = acc.slice();
      acc = acc.map((v, i) => v + (s.values[i] || 0));
      stack.push({ lo, hi: acc.slice() });
    }
    if (top === undefined) top = Math.max(0, ...acc);
  }
  if (top === undefined) top = Math.max(0, ...series.flatMap((s) => s.values.filter((v) => v !== null)));
  if (!(top > 0)) top = 1;
  const y = (v) => pad.t + (1 - v / top) * (H - pad.t - pad.b);
  for (const frac of [0, 0.5, 1]) {
    const yy = y(top * frac);
    root.append(svg("line", { x1: pad.l, x2: W - pad.r, y1: yy, y2: yy, class: "grid-line" }));
    const label = svg("text", { x: pad.l - 4, y: yy + 3, "text-anchor": "end" });
    label.textContent = format(top * frac);
    root.append(label);
  }
  for (const [label, tm, anchor] of [[`−${duration(span / 1000)}`, t0, "start"], [`−${duration(span / 2000)}`, t0 + span / 2, "middle"], ["now", now, "end"]]) {
    const tx = svg("text", { x: x(tm), y: H - 3, "text-anchor": anchor });
    tx.textContent = label;
    root.append(tx);
  }
  if (t.length === 0) {
    const e = svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" });
    e.textContent = state.last && state.last.history === null ? "metrics are off in this process" : "collecting…";
    root.append(e);
  }
  series.forEach((s, k) => {
    let d = "";
    let n = 0;
    if (stacked) {
      const { lo, hi } = stack[k];
      if (t.length) {
        d = t.map((tm, i) => `${i ? "L" : "M"}${x(tm).toFixed(1)},${y(hi[i]).toFixed(1)}`).join("");
        d += t.map((tm, i) => i).reverse().map((i) => `L${x(t[i]).toFixed(1)},${y(lo[i]).toFixed(1)}`).join("") + "Z";
        n = t.length;
      }
      root.append(svg("path", { d, class: `area s-${s.cls}`, "stroke-dasharray": DASH[s.cls], "data-series": s.name, "data-points": n }));
    } else {
      let pen = false;
      const gap = (v) => v === null || v === undefined;
      const dots = [];
      t.forEach((tm, i) => {
        const v = s.values[i];
        if (gap(v)) { pen = false; return; }
        d += `${pen ? "L" : "M"}${x(tm).toFixed(1)},${y(v).toFixed(1)}`;
        // A point with no neighbour draws no line: it gets a dot.
        if (!pen && (i + 1 >= t.length || gap(s.values[i + 1]))) dots.push([x(tm), y(v)]);
        pen = true;
        n++;
      });
      root.append(svg("path", { d, class: `series s-${s.cls}`, "stroke-dasharray": DASH[s.cls], "data-series": s.name, "data-points": n }));
      for (const [cx, cy] of dots) root.append(svg("circle", { cx, cy, r: 3, class: `dot s-${s.cls}` }));
    }
  });
  root.setAttribute("aria-label", `${series.map((s) => s.name).join(", ")} over the last ${duration(span / 1000)}`);
  box.replaceChildren(root);
}

// A legend: one item per series, with its line pattern, name and value.
function legend(ul, items) {
  ul.replaceChildren(...items.map(({ name, cls, value, title }) => {
    const sw = svg("svg", { viewBox: "0 0 28 10", "aria-hidden": "true" });
    sw.append(svg("line", { x1: 1, x2: 27, y1: 5, y2: 5, class: `series s-${cls}`, "stroke-dasharray": DASH[cls], "stroke-width": 2.5 }));
    return el("li", { "data-series": name, title }, sw, el("span", { class: "name" }, name), el("span", { class: "value" }, value));
  }));
}

// ---- panels ----------------------------------------------------------------------------------

function drawTraffic() {
  const h = state.history;
  if (!h) return;
  const t = h.t_ms;
  const reads = h.reads_per_second.map(sum);
  const all = sum(reads);
  chart($("#chart-hits"), {
    t, max: 1, format: (v) => `${Math.round(v * 100)}%`,
    series: TIERS.map((name, i) => ({ name, cls: name, values: h.served_share[i] })),
  });
  legend($("#legend-hits"), TIERS.map((name, i) => ({
    name, cls: name, value: all > 0 ? pct(reads[i] / all) : "–",
    title: `share of the last hour's reads served by the ${name} tier`,
  })));
  chart($("#chart-requests"), { t, format: perSecond, series: [{ name: "requests/s", cls: "a", values: h.requests_per_second }] });
  chart($("#chart-sent"), { t, format: (v) => bytes(v), series: [{ name: "bytes out/s", cls: "b", values: h.sent_bytes_per_second }] });
  legend($("#legend-traffic"), [
    { name: "requests/s", cls: "a", value: perSecond(lastOf(h.requests_per_second)) },
    { name: "bytes out/s", cls: "b", value: bytes(lastOf(h.sent_bytes_per_second)) },
  ]);
  chart($("#chart-bytes"), {
    t, stacked: true, format: (v) => bytes(v),
    series: TIERS.map((name, i) => ({ name, cls: name, values: h.bytes_per_second[i] })),
  });
  const byTier = h.bytes_per_second.map((a) => sum(a) * (h.interval_seconds || 2));
  legend($("#legend-bytes"), TIERS.map((name, i) => ({ name, cls: name, value: bytes(byTier[i]), title: `bytes served from the ${name} tier in the last hour` })));
  chart($("#chart-fetches"), { t, format: perSecond, series: [{ name: "fetches/s", cls: "a", values: h.source_fetches_per_second }] });
  chart($("#chart-latency"), { t, format: (v) => ms(v), series: [{ name: "mean ms", cls: "b", values: h.source_mean_ms }] });
  const lat = h.source_mean_ms.filter((v) => v !== null);
  legend($("#legend-source"), [
    { name: "fetches/s", cls: "a", value: perSecond(lastOf(h.source_fetches_per_second)) },
    { name: "mean time to first byte", cls: "b", value: ms(lastOf(lat)) },
    { name: "errors/s", cls: "c", value: perSecond(lastOf(h.source_errors_per_second)) },
  ]);
}

function facts(dl, rows) {
  dl.replaceChildren(...rows.flatMap(([k, v, cls]) => [el("dt", {}, k), el("dd", { class: cls }, v)]));
}

function drawDisk(s) {
  const d = s.disk;
  const quota = d.quota_bytes;
  const bar = $("#disk-bar");
  const w = (x) => `${Math.min(100, Math.max(0, x * 100)).toFixed(2)}%`;
  const used = quota ? d.used_bytes / quota : 0;
  bar.querySelector(".fill").style.width = quota ? w(used) : "0%";
  const r = bar.querySelector(".reserved");
  r.style.left = quota ? w(used) : "0%";
  r.style.width = quota ? w(d.reserved_bytes / quota) : "0%";
  bar.querySelector(".mark.high").style.left = w(d.high_watermark);
  bar.querySelector(".mark.low").style.left = w(d.low_watermark);
  bar.hidden = !quota;
  const summary = quota
    ? `${bytes(d.used_bytes)} used of ${bytes(quota)} (${pct(used)}) · reserved ${bytes(d.reserved_bytes)} · evicts above ${pct(d.high_watermark)} down to ${pct(d.low_watermark)}`
    : `${bytes(d.used_bytes)} used · no quota (serve --disk-quota sets one)`;
  $("#disk-summary").textContent = summary;
  bar.setAttribute("aria-label", summary);
  const u = d.usage || {};
  const h = state.history;
  facts($("#disk-facts"), [
    ["evictions/s", perSecond(h ? lastOf(h.evictions_per_second) : null)],
    ["evicted since start", `${d.n_evicted} blobs, ${bytes(d.evicted_bytes)}`],
    ["blobs", u.n_blobs === undefined ? "–" : `${u.n_blobs} (${bytes(u.blob_bytes)})`],
    ["pinned", bytes(u.pinned_bytes)],
    ["protected (uploads, never evicted)", bytes(u.upload_bytes)],
    ["orphans (prune frees)", bytes(u.orphan_bytes)],
    ["served without storing (no room)", String(d.n_pass_through)],
  ]);
}

function drawShared(s) {
  const sh = s.shared;
  if (!sh) {
    facts($("#shared-facts"), [["state", "not configured (serve --shared URL)"]]);
    return;
  }
  const c = sh.counters || {};
  const state_ = { closed: ["reachable (breaker closed)", "state-ok"], open: ["unreachable (breaker open)", "state-bad"], "half-open": ["probing (breaker half-open)", "state-wait"] }[sh.breaker] || [sh.breaker, ""];
  facts($("#shared-facts"), [
    ["store", sh.store],
    ["state", state_[0], state_[1]],
    ["write-back queue", `${sh.n_queued} of ${sh.queue_capacity}`],
    ["write-backs done", String(c.write_backs_done ?? 0)],
    ["dropped (queue full)", String(c.write_backs_dropped ?? 0)],
    ["failed", String(c.write_backs_failed ?? 0)],
    ["errors", String(c.errors ?? 0)],
    ["breaker trips", String(c.breaker_trips ?? 0)],
    ["hits / misses", `${c.hits ?? 0} / ${c.misses ?? 0}`],
  ]);
}

function drawDerive(s) {
  const d = s.derivations;
  if (!d) {
    facts($("#derive-facts"), [["queue", "unavailable"]]);
    return;
  }
  facts($("#derive-facts"), [
    ["workers", d.workers === 0 ? "none (derivations off)" : String(d.workers)],
    ["queued", String(d.queued)],
    ["running", String(d.running)],
    ["failed since start", String(d.failed), d.failed > 0 ? "state-bad" : ""],
    ["done since start", String(d.done)],
    ["oldest queued", d.queued > 0 ? duration(d.oldest_queued_seconds) : "–"],
  ]);
}

const TEXT_COLUMNS = ["name", "kind", "source"];
function sortValue(ns, key) {
  if (key === "quota_use") return ns.quota_bytes ? (ns.blob_bytes || 0) / ns.quota_bytes : -1;
  const v = ns[key];
  if (v === null || v === undefined) return TEXT_COLUMNS.includes(key) ? "" : -1;
  return v;
}

function drawNamespaces(s) {
  const list = (s.namespaces || []).slice();
  const { key, dir } = state.sort;
  list.sort((a, b) => {
    const x = sortValue(a, key), y = sortValue(b, key);
    const c = typeof x === "string" ? x.localeCompare(y) : x - y;
    return c * dir || a.name.localeCompare(b.name);
  });
  const rows = list.map((ns) => {
    const quotaCell = ns.quota_bytes
      ? el("td", {}, quotaBar((ns.blob_bytes || 0) / ns.quota_bytes), ` ${pct((ns.blob_bytes || 0) / ns.quota_bytes)} of ${bytes(ns.quota_bytes)}`)
      : el("td", { class: "muted" }, "none");
    const update = ns.kind === "directory"
      ? el("button", { type: "button", onclick: () => updateNs(ns.name), "data-action": "update" }, "Update")
      : null;
    return el("tr", { "data-ns": ns.name },
      el("th", { scope: "row" }, ns.name),
      el("td", {}, ns.kind),
      el("td", { title: ns.source || "" }, ns.source || "–"),
      el("td", { class: "n" }, String(ns.n_entries)),
      el("td", { class: "n", title: `unique to it: ${bytes(ns.unique_bytes)}` }, bytes(ns.blob_bytes)),
      quotaCell,
      el("td", { title: ns.last_update_kind || "" }, ns.kind === "directory" ? ago(ns.last_update_ms, s.now_ms) : "–"),
      el("td", {}, el("div", { class: "actions" },
        update,
        el("button", { type: "button", onclick: () => prune(ns.name), "data-action": "prune" }, "Prune…"),
        el("button", { type: "button", class: "danger", onclick: () => deleteNs(ns.name), "data-action": "delete" }, "Delete…"))));
  });
  const body = $("#ns-table tbody");
  if (rows.length === 0) body.replaceChildren(el("tr", {}, el("td", { colspan: 8, class: "muted" }, "no namespaces")));
  else body.replaceChildren(...rows);
}

function quotaBar(frac) {
  const b = el("div", { class: "bar small", role: "img", "aria-label": `${pct(frac)} of its quota` }, el("div", { class: "fill" }));
  b.firstChild.style.width = `${Math.min(100, frac * 100).toFixed(1)}%`;
  return b;
}

function drawWarnings(s) {
  const list = (s.warnings || []).slice().reverse();
  const body = $("#warn-table tbody");
  if (list.length === 0) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: 4, class: "muted" }, "no warnings since start")));
    return;
  }
  body.replaceChildren(...list.map((w) => el("tr", {},
    el("td", { class: "num", title: new Date(w.time_ms).toISOString() }, clock(w.time_ms)),
    el("td", { class: `level-${w.level}` }, w.level),
    el("td", {}, w.target),
    el("td", {}, w.message))));
}

function draw() {
  const s = state.last;
  if (!s) return;
  $("#version").textContent = `v${s.version} · up ${duration(s.uptime_seconds)}`;
  $("#updated").textContent = `updated ${clock(s.now_ms)}`;
  drawTraffic();
  drawDisk(s);
  drawShared(s);
  drawDerive(s);
  drawNamespaces(s);
  drawWarnings(s);
  if (s.index_error) notice(`cannot read the index: ${s.index_error}`, true);
}

// ---- talking to the server -------------------------------------------------------------------

function notice(text, isError = false) {
  const n = $("#notice");
  n.textContent = text;
  n.classList.toggle("error", isError);
}

async function api(method, path, body) {
  const res = await fetch(path, {
    method,
    credentials: "same-origin",
    headers: { "X-Tiercache-UI": "1", ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  if (res.status === 401) {
    location.reload(); // the session ended: the login form
    throw new Error("logged out");
  }
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(data.message || `${res.status} ${res.statusText}`);
  return data;
}

async function poll() {
  if (state.busy) return;
  state.busy = true;
  try {
    const since = state.history && state.history.t_ms.length ? lastOf(state.history.t_ms) : null;
    const s = await api("GET", "/ui/api/status" + (since ? `?since=${since}` : ""));
    merge(s.history);
    state.last = s;
    draw();
    if ($("#notice").classList.contains("error") && !s.index_error) notice("");
  } catch (e) {
    if (e.message !== "logged out") notice(`cannot reach the server: ${e.message}`, true);
  } finally {
    state.busy = false;
  }
}

// ---- actions, each behind a confirmation -----------------------------------------------------

function confirmDialog({ title, body, word, ok = "Confirm", danger = false }) {
  const dlg = $("#confirm");
  $("#confirm-title").textContent = title;
  $("#confirm-body").replaceChildren(...(Array.isArray(body) ? body : [el("p", {}, body)]));
  const typed = $("#confirm-type");
  const input = $("#confirm-input");
  typed.hidden = !word;
  input.value = "";
  $("#confirm-word").textContent = word || "";
  const okButton = $("#confirm-ok");
  okButton.textContent = ok;
  okButton.className = danger ? "danger" : "";
  okButton.disabled = !!word;
  input.oninput = () => { okButton.disabled = input.value !== word; };
  return new Promise((resolve) => {
    dlg.onclose = () => resolve(dlg.returnValue === "ok" && (!word || input.value === word));
    dlg.returnValue = "";
    dlg.showModal();
    if (word) input.focus();
  });
}

function pruneSummary(r) {
  const lines = [`${r.n_entries} entries and ${r.n_blobs} blobs, freeing ${bytes(r.freed_bytes)}`];
  return [el("p", {}, (r.dry_run ? "This pass would remove " : "Removed ") + lines[0] + ".")];
}

async function prune(ns) {
  try {
    const body = ns ? { ns, dry_run: true } : { dry_run: true };
    const preview = await api("POST", "/ui/api/admin/prune", body);
    const what = ns ? `namespace ${ns}` : "every namespace";
    const go = await confirmDialog({ title: `Prune ${what}?`, body: pruneSummary(preview), ok: "Prune now", danger: true });
    if (!go) return;
    const done = await api("POST", "/ui/api/admin/prune", ns ? { ns } : {});
    notice(`pruned ${what}: ${done.n_entries} entries, ${done.n_blobs} blobs, ${bytes(done.freed_bytes)} freed`);
    await poll();
  } catch (e) {
    notice(`prune failed: ${e.message}`, true);
  }
}

async function deleteNs(ns) {
  const go = await confirmDialog({
    title: `Delete namespace ${ns}?`,
    body: "Its entries go at once, with every blob no other namespace references. Its source is not touched.",
    word: ns, ok: "Delete", danger: true,
  });
  if (!go) return;
  try {
    const r = await api("DELETE", `/ui/api/admin/namespaces/${encodeURIComponent(ns)}`);
    notice(r.existed ? `deleted namespace ${ns}` : `namespace ${ns} was already gone`);
    await poll();
  } catch (e) {
    notice(`delete failed: ${e.message}`, true);
  }
}

async function updateNs(ns) {
  const go = await confirmDialog({ title: `Update namespace ${ns}?`, body: "Re-reads what changed in its directory.", ok: "Update" });
  if (!go) return;
  try {
    notice(`updating ${ns}…`);
    const r = await api("POST", `/ui/api/admin/namespaces/${encodeURIComponent(ns)}/update`, {});
    const parts = Object.entries(r).filter(([, v]) => typeof v === "number").map(([k, v]) => `${k.replace(/^n_/, "")} ${v}`);
    notice(`updated ${ns}: ${parts.join(", ")}`);
    await poll();
  } catch (e) {
    notice(`update failed: ${e.message}`, true);
  }
}

function setUpSorting() {
  for (const th of document.querySelectorAll("#ns-table th[data-key]")) {
    th.querySelector("button").addEventListener("click", () => {
      const key = th.dataset.key;
      state.sort = { key, dir: state.sort.key === key ? -state.sort.dir : 1 };
      for (const other of document.querySelectorAll("#ns-table th[data-key]")) other.setAttribute("aria-sort", "none");
      th.setAttribute("aria-sort", state.sort.dir === 1 ? "ascending" : "descending");
      if (state.last) drawNamespaces(state.last);
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  setUpSorting();
  $("#prune-all").addEventListener("click", () => prune(null));
  poll();
  setInterval(poll, POLL_MS);
});
