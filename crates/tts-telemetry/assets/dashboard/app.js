// ttsd live dashboard. Everything comes from the admin origin: /dashboard/events (SSE snapshots of
// /metrics/summary, /health and selected /metrics series), /admin/alerts, /admin/traces, /admin/logs.
"use strict";
(function () {
  const MAX_FRAMES = 900;
  const RATE_SPAN = 10; // seconds over which counters become rates and histograms become means
  const TOKEN_KEY = "ttsd.adminToken";
  const state = { frames: [], tab: "overview", windowS: 300, alerts: null, alertsStatus: "loading",
    thresholds: null, logs: [], logCursor: null, lastSeq: 0 };
  const $ = (id) => document.getElementById(id);

  // ---------- formatting ----------
  function esc(s) {
    return String(s === null || s === undefined ? "" : s).replace(/[&<>"']/g,
      (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }
  function num(v, digits) {
    if (v === null || v === undefined || Number.isNaN(v)) return "—";
    if (digits === undefined && Number.isInteger(v)) return String(v);
    const d = digits === undefined ? (Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : 2) : digits;
    return Number(v).toFixed(d);
  }
  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    const s = Math.floor(seconds);
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min" + (s % 60 ? " " + (s % 60) + " s" : "");
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }
  function ago(ms) {
    if (!ms) return "—";
    return duration(Math.max(0, (Date.now() - ms) / 1000)) + " ago";
  }
  function timeOf(value) {
    if (value === null || value === undefined) return null;
    if (typeof value === "number") return value > 1e12 ? value : value * 1000;
    const t = Date.parse(value);
    return Number.isNaN(t) ? null : t;
  }
  // The page's policy forbids inline style attributes, so computed styles go through the CSSOM.
  function applyDataStyles(root) {
    for (const el of root.querySelectorAll("[data-c],[data-l]")) {
      if (el.dataset.c) el.style.background = el.dataset.c;
      if (el.dataset.l) { el.style.left = el.dataset.l + "%"; el.style.width = el.dataset.w + "%"; }
    }
  }
  function unavailable(what, route) {
    return '<div class="unavailable"><strong>' + esc(what) + " is not available in this build.</strong> " +
      "The admin server has no <code>" + esc(route) + "</code> route, so there is nothing to show.</div>";
  }

  // ---------- admin API ----------
  function authHeaders() {
    const token = sessionStorage.getItem(TOKEN_KEY);
    return token ? { Authorization: "Bearer " + token } : {};
  }
  async function getJson(url) {
    let response;
    try {
      response = await fetch(url, { headers: authHeaders(), cache: "no-store" });
    } catch (error) {
      return { status: 0, error: "the admin server did not answer" };
    }
    if (response.status === 404) return { status: 404 };
    if (!response.ok) return { status: response.status, error: (await response.text()).trim() };
    return { status: 200, data: await response.json() };
  }

  // ---------- snapshots ----------
  function latest() { return state.frames[state.frames.length - 1]; }
  function isWorker(frame) { return frame && frame.summary && frame.summary.worker !== undefined; }
  function samples(frame, name) { return (frame && frame.series && frame.series[name]) || []; }
  function total(frame, name, match) {
    let sum = 0, seen = false;
    for (const [labels, value] of samples(frame, name)) {
      if (match && !match(labels)) continue;
      sum += value; seen = true;
    }
    return seen ? sum : null;
  }
  function back(i, span) {
    const f = state.frames[i];
    let j = i;
    while (j > 0 && f.time_unix_ms - state.frames[j - 1].time_unix_ms <= span * 1000 + 500) j--;
    return j === i ? null : state.frames[j];
  }
  function rateAt(i, name, match) {
    const a = back(i, RATE_SPAN), b = state.frames[i];
    if (!a) return null;
    const va = total(a, name, match), vb = total(b, name, match);
    if (va === null || vb === null || vb < va) return null;
    return (vb - va) / ((b.time_unix_ms - a.time_unix_ms) / 1000);
  }
  function meanAt(i, base, match) {
    const a = back(i, RATE_SPAN), b = state.frames[i];
    if (!a) return null;
    const dc = total(b, base + "_count", match) - total(a, base + "_count", match);
    const ds = total(b, base + "_sum", match) - total(a, base + "_sum", match);
    return dc > 0 ? ds / dc : null;
  }
  function labelValues(name, key) {
    const set = new Set();
    for (const f of state.frames) for (const [labels] of samples(f, name)) if (labels[key]) set.add(labels[key]);
    return [...set].sort();
  }
  // SLO lines from the summary's `slo`; a threshold per engine ({espeak: 500, piper: 500}) draws its
  // strictest value.
  function slo(summary) {
    const s = (summary && summary.slo) || {};
    const line = (v) => (v !== null && typeof v === "object" ? Math.min(...Object.values(v)) : v);
    return { firstAudio: line(s.first_audio_ms), bargeIn: line(s.barge_in_ms), frame: line(s.frame_interval_ms),
      objectives: s.objectives || null };
  }
  // Compliance keys of the summary and the objective names they are configured under.
  const OBJECTIVE_ALIASES = { jitter: "frame_pacing", frame_pacing: "jitter" };

  // ---------- header ----------
  function renderHeader(frame) {
    const worker = isWorker(frame);
    $("role").textContent = worker ? "worker " + frame.summary.worker : "gateway";
    const ok = frame.health && frame.health.status === "ok";
    const pill = $("status-pill");
    pill.textContent = ok ? "healthy" : "failing";
    pill.className = "pill " + (ok ? "ok" : "bad");
    $("updated").textContent = "updated " + TtsCharts.clock(frame.time_unix_ms) + " · up " +
      duration(frame.summary.uptime_seconds);
  }

  // ---------- overview ----------
  function card(label, value, unit, sub, level) {
    return '<div class="card ' + (level || "") + '"><div class="label">' + esc(label) + '</div><div class="value">' +
      esc(value) + (unit ? "<small>" + esc(unit) + "</small>" : "") + '</div><div class="sub">' + sub + "</div></div>";
  }
  function against(value, line) {
    if (value === null || value === undefined || !line) return "";
    return value <= line ? "ok" : value <= line * 1.5 ? "warn" : "bad";
  }
  function firingAlerts() {
    if (!state.alerts) return null;
    return state.alerts.active.filter((a) => a.state === "firing");
  }
  function renderCards(frame) {
    const s = frame.summary, i = state.frames.length - 1;
    const firing = firingAlerts();
    const alertCard = card("Firing alerts", firing === null ? "—" : firing.length, "",
      firing === null ? (state.alertsStatus === "unavailable" ? "alerting not in this build" : "loading") :
        firing.filter((a) => a.acknowledged).length + " acknowledged",
      firing === null ? "" : firing.length ? "bad" : "ok");
    const cpu = rateAt(i, "process_cpu_seconds_total");
    const rss = total(frame, "process_resident_memory_bytes");
    if (isWorker(frame)) {
      $("ov-cards").innerHTML = [
        card("Active sessions", s.active_sessions, "/ " + s.max_sessions, "on this worker"),
        card("Engine threads busy", s.busy_threads, "/ " + s.engine_threads, "now"),
        card("Queued chunks", s.queued_chunks, "", "waiting for an engine thread"),
        card("Resident voices", (s.resident_voices || []).length, "", esc((s.resident_voices || []).join(", "))),
        card("CPU", num(cpu === null ? null : cpu * 100, 0), "%", "of one core, last " + RATE_SPAN + " s"),
        card("Resident memory", num(rss === null ? null : rss / 1048576, 0), "MiB", "RSS"),
        alertCard,
      ].join("");
      return;
    }
    const lines = slo(s);
    const under = rateAt(i, "tts_underruns_total");
    $("ov-cards").innerHTML = [
      card("Active sessions", s.sessions_active, "", (s.workers_active ?? "—") + " of " +
        ((s.workers_active || 0) + (s.workers_idle || 0)) + " engine threads busy"),
      card("First audio p95", num(s.first_audio_p95_ms), "ms", "SLO " + num(lines.firstAudio, 0) + " ms · p99 " +
        num(s.first_audio_p99_ms) + " ms", against(s.first_audio_p95_ms, lines.firstAudio)),
      card("Barge-in p95", num(s.session_barge_in_p95_ms), "ms", "SLO " + num(lines.bargeIn, 0) + " ms",
        against(s.session_barge_in_p95_ms, lines.bargeIn)),
      card("Pacing p95", num(s.frame_interval_p95_ms), "ms", "frame interval · SLO " + num(lines.frame, 0) + " ms",
        against(s.frame_interval_p95_ms, lines.frame)),
      card("Underruns", num(under === null ? null : under * 60, 1), "/min", "last " + RATE_SPAN + " s",
        under ? "warn" : "ok"),
      card("Error budget left", budgetHeadline(s), budgetHeadline(s) === "—" ? "" : "%", budgetSub(s),
        budgetLevel(s)),
      alertCard,
    ].join("");
  }
  function budgets(s) {
    const lines = slo(s);
    const rows = [];
    for (const key of Object.keys(s.slo_compliance || {})) {
      const compliance = s.slo_compliance[key];
      const objective = lines.objectives ? lines.objectives[key] ?? lines.objectives[OBJECTIVE_ALIASES[key]] ?? null : null;
      let left = null;
      if (compliance !== null && compliance !== undefined && objective) {
        left = Math.max(-1, 1 - (1 - compliance) / (1 - objective));
      }
      rows.push({ key, compliance, objective, left, violations: s.slo_violations ? s.slo_violations[key] : null });
    }
    return rows;
  }
  function budgetHeadline(s) {
    const known = budgets(s).filter((r) => r.left !== null);
    if (!known.length) return "—";
    return num(Math.min(...known.map((r) => r.left)) * 100, 1);
  }
  function budgetSub(s) {
    const known = budgets(s).filter((r) => r.left !== null);
    if (!slo(s).objectives) return "no SLO objective in this build's summary";
    if (!known.length) return "no SLO events in the window yet";
    const worst = known.reduce((a, b) => (a.left <= b.left ? a : b));
    return "lowest: " + esc(worst.key.replace("_", " ")) + " over " + duration(s.window_seconds);
  }
  function budgetLevel(s) {
    const h = budgetHeadline(s);
    if (h === "—") return "";
    const v = Number(h);
    return v > 50 ? "ok" : v > 0 ? "warn" : "bad";
  }
  function renderHealth(frame) {
    const h = frame.health || {};
    let html = "<table><tr><th>Check</th><th>Detail</th><th>Readiness</th></tr>";
    for (const [name, c] of Object.entries(h.checks || {})) {
      html += '<tr><td><span class="dot ' + (c.ok ? "ok" : "bad") + '"></span>' + esc(name) + "</td><td>" +
        esc(c.detail) + "</td><td class=\"nowrap\">" + (c.required_for_readiness ? "required" : "informational") + "</td></tr>";
    }
    for (const [name, b] of Object.entries(h.heartbeats || {})) {
      html += '<tr><td><span class="dot ' + (b.alive ? "ok" : "bad") + '"></span>' + esc(name) +
        "</td><td>heartbeat " + num(b.age_seconds, 2) + " s old (limit " + num(b.max_age_seconds, 0) +
        " s)</td><td class=\"nowrap\">liveness</td></tr>";
    }
    $("ov-health").innerHTML = html + "</table>";
  }
  function renderFleet(frame) {
    if (isWorker(frame)) {
      $("ov-fleet-title").textContent = "Resident voices";
      const voices = frame.summary.resident_voices || [];
      $("ov-fleet").innerHTML = voices.length ? "<table><tr><th>Voice</th></tr>" +
        voices.map((v) => '<tr><td><span class="dot ok"></span>' + esc(v) + "</td></tr>").join("") + "</table>" :
        '<div class="muted">No voice is resident.</div>';
      return;
    }
    const workers = samples(frame, "tts_worker_up");
    if (workers.length) {
      $("ov-fleet-title").textContent = "Workers";
      const by = (name, w) => total(frame, name, (l) => l.worker === w);
      let html = '<table><tr><th>Worker</th><th class="num">Sessions</th><th class="num">Queue</th></tr>';
      for (const [labels, up] of workers) {
        const w = labels.worker;
        html += '<tr><td><span class="dot ' + (up ? "ok" : "bad") + '"></span>' + esc(w) + (up ? "" : " (down)") +
          '</td><td class="num">' + num(by("tts_worker_sessions_active", w), 0) + " / " +
          num(by("tts_worker_sessions_max", w), 0) + '</td><td class="num">' + num(by("tts_worker_queue_depth", w), 0) +
          "</td></tr>";
      }
      $("ov-fleet").innerHTML = html + "</table>";
      return;
    }
    $("ov-fleet-title").textContent = "Voices and engine pool";
    const voices = labelValues("tts_real_time_factor_ratio_count", "voice");
    const s = frame.summary;
    let html = '<table><tr><td>Engine threads</td><td class="num">' + esc(s.workers_active) + " busy of " +
      esc((s.workers_active || 0) + (s.workers_idle || 0)) + '</td></tr><tr><td>Chunks queued</td><td class="num">' +
      esc(s.queue_depth) + '</td></tr><tr><td>Voices that synthesised</td><td class="num">' +
      (voices.length ? voices.map(esc).join(", ") : '<span class="muted">none yet</span>') + "</td></tr></table>";
    $("ov-fleet").innerHTML = html;
  }
  function renderSlo(frame) {
    if (isWorker(frame)) {
      $("ov-slo").innerHTML = '<div class="muted">SLOs are measured at the gateway, where the client\'s clock is.</div>';
      return;
    }
    const names = { first_audio: "First audio", barge_in: "Barge-in", frame_pacing: "Pacing (frame interval)", jitter: "Pacing (frame interval)",
      availability: "Availability" };
    let html = '<table><tr><th>SLO</th><th class="num">Compliance</th><th class="num">Objective</th>' +
      '<th class="num">Budget left</th><th class="num">Violations</th></tr>';
    for (const r of budgets(frame.summary)) {
      html += "<tr><td>" + esc(names[r.key] || r.key.replace(/_/g, " ")) + '</td><td class="num">' +
        (r.compliance === null || r.compliance === undefined ? "no events" : num(r.compliance * 100, 2) + " %") +
        '</td><td class="num">' + (r.objective ? num(r.objective * 100, 2) + " %" : "—") + '</td><td class="num">' +
        (r.left === null ? "—" : num(r.left * 100, 1) + " %") + '</td><td class="num">' + num(r.violations, 0) +
        "</td></tr>";
    }
    html += '</table><div class="muted note">Compliance over the last ' +
      duration(frame.summary.window_seconds) + " (<code>/metrics/summary</code> <code>slo_compliance</code>).</div>";
    $("ov-slo").innerHTML = html;
  }
  function renderOverviewAlerts() {
    const box = $("ov-alerts");
    if (state.alertsStatus === "unavailable") { box.innerHTML = unavailable("Alerting", "/admin/alerts"); return; }
    const firing = firingAlerts();
    if (firing === null) { box.innerHTML = '<span class="muted">' + esc(state.alertsStatus) + "</span>"; return; }
    if (!firing.length) { box.innerHTML = '<span class="dot ok"></span>No alert is firing.'; return; }
    box.innerHTML = "<table>" + firing.map((a) => "<tr><td>" + sevTag(a.severity) + "</td><td>" + esc(a.name) +
      (a.acknowledged ? ' <span class="muted">(acknowledged)</span>' : "") + "</td><td>" + esc(a.summary) +
      '</td><td class="num">' + ago(a.since) + "</td></tr>").join("") + "</table>";
  }
  function renderOverview() {
    const frame = latest();
    if (!frame) return;
    renderCards(frame);
    renderHealth(frame);
    renderFleet(frame);
    renderSlo(frame);
    renderOverviewAlerts();
  }

  // ---------- metrics ----------
  const COLORS = ["--c1", "--c2", "--c3", "--c4", "--c5", "--c6"];
  const color = (i) => getComputedStyle(document.documentElement).getPropertyValue(COLORS[i % COLORS.length]).trim();
  const ms = (v) => (v === null || v === undefined ? null : v * 1000);
  function gatewayCharts() {
    const sum = (key) => (f) => f.summary[key] ?? null;
    const lines = slo(latest().summary);
    return [
      { id: "first-audio", title: "First audio", unit: "ms", thresholds: [lines.firstAudio],
        series: [["p50", sum("first_audio_p50_ms")], ["p95", sum("first_audio_p95_ms")], ["p99", sum("first_audio_p99_ms")]] },
      { id: "barge-in", title: "Barge-in p95", unit: "ms", thresholds: [lines.bargeIn],
        series: [["p95", sum("session_barge_in_p95_ms")]] },
      { id: "pacing", title: "Frame interval p95 (pacing)", unit: "ms", thresholds: [lines.frame],
        series: [["p95", sum("frame_interval_p95_ms")]] },
      { id: "underruns", title: "Underruns", unit: "/s", series: [["underruns", (f, i) => rateAt(i, "tts_underruns_total")]] },
      { id: "rtf", title: "Real-time factor per voice", unit: "×", digits: 3, series: rtfSeries() },
      { id: "queue-depth", title: "Queue depth", unit: "chunks", series: [["queued", sum("queue_depth")]] },
      { id: "queue-wait", title: "Queue wait (mean)", unit: "ms", series: ["first", "later"].map((lane) =>
        [lane + " chunk", (f, i) => ms(meanAt(i, "tts_queue_wait_seconds", (l) => l.lane === lane))]) },
      { id: "pool", title: "Engine pool utilisation", unit: "%", max: 100,
        series: [["busy", sum("worker_utilization_percent")]] },
      { id: "sessions", title: "Active sessions", unit: "", series: [["sessions", sum("sessions_active")]] },
    ].concat(processCharts());
  }
  function rtfSeries() {
    const voices = labelValues("tts_real_time_factor_ratio_count", "voice");
    const rows = voices.map((v) => [v + " (mean)", (f, i) => meanAt(i, "tts_real_time_factor_ratio", (l) => l.voice === v)]);
    rows.push(["all voices p50", (f) => f.summary.real_time_factor_p50 ?? null]);
    return rows;
  }
  function workerCharts() {
    const sum = (key) => (f) => f.summary[key] ?? null;
    return [
      { id: "w-sessions", title: "Active sessions", unit: "", series: [["sessions", sum("active_sessions")]] },
      { id: "w-busy", title: "Engine threads busy", unit: "%", max: 100,
        series: [["busy", (f) => f.summary.engine_threads ? (100 * f.summary.busy_threads) / f.summary.engine_threads : null]] },
      { id: "w-queue", title: "Queued chunks", unit: "chunks", series: [["queued", sum("queued_chunks")]] },
      { id: "w-first", title: "Chunk to first audio (mean)", unit: "ms",
        series: [["mean", (f, i) => ms(meanAt(i, "tts_worker_server_first_audio_seconds"))]] },
      { id: "w-chunks", title: "Chunks", unit: "/s", series: ["finished", "failed", "cancelled", "refused"].map((o) =>
        [o, (f, i) => rateAt(i, "tts_worker_server_chunks_total", (l) => l.outcome === o)]) },
    ].concat(processCharts());
  }
  function processCharts() {
    const charts = [
      { id: "cpu", title: "CPU", unit: "% of a core", series: [["cpu", (f, i) => {
        const r = rateAt(i, "process_cpu_seconds_total"); return r === null ? null : r * 100; }]] },
      { id: "rss", title: "Resident memory", unit: "MiB", series: [["rss", (f) => {
        const v = total(f, "process_resident_memory_bytes"); return v === null ? null : v / 1048576; }]] },
    ];
    const gpus = labelValues("tts_gpu_utilization_ratio", "gpu");
    if (gpus.length) {
      charts.push({ id: "gpu", title: "GPU", unit: "%", max: 100, series: gpus.flatMap((g) => [
        ["gpu " + g + " busy", (f) => { const v = total(f, "tts_gpu_utilization_ratio", (l) => l.gpu === g); return v === null ? null : v * 100; }],
        ["gpu " + g + " memory", (f) => {
          const u = total(f, "tts_gpu_memory_used_bytes", (l) => l.gpu === g), t = total(f, "tts_gpu_memory_total_bytes", (l) => l.gpu === g);
          return u === null || !t ? null : (100 * u) / t; }],
      ]) });
    } else {
      const check = latest().health && latest().health.checks && latest().health.checks.gpu;
      charts.push({ id: "gpu", title: "GPU", unit: "", empty: "No GPU in this process" + (check ? ": " + check.detail : ".") });
    }
    return charts;
  }
  const chartViews = new Map();
  function renderMetrics() {
    const frame = latest();
    if (!frame) return;
    const specs = isWorker(frame) ? workerCharts() : gatewayCharts();
    const box = $("charts");
    const key = specs.map((s) => s.id + ":" + (s.series || []).map((x) => x[0]).join(",")).join("|");
    if (box.dataset.key !== key) {
      box.dataset.key = key;
      chartViews.clear();
      box.innerHTML = specs.map((s) => '<div class="chart" id="chart-' + s.id + '"><header><h3>' + esc(s.title) +
        '</h3><div class="now"></div></header>' + (s.empty ? '<div class="empty">' + esc(s.empty) + "</div>" :
        '<canvas></canvas><div class="legend">' + s.series.map((x, i) => '<span><i data-c="' + color(i) +
        '"></i>' + esc(x[0]) + "</span>").join("") + (s.thresholds && s.thresholds[0] ?
        '<span><i class="dash"></i>SLO ' + esc(s.thresholds[0]) + " " + esc(s.unit) + "</span>" : "") + "</div>") +
        "</div>").join("");
      applyDataStyles(box);
    }
    const windowMs = state.windowS * 1000;
    const first = Math.max(0, state.frames.length - state.windowS - RATE_SPAN - 2);
    const t = [];
    for (let i = first; i < state.frames.length; i++) t.push(state.frames[i].time_unix_ms);
    for (const spec of specs) {
      if (spec.empty) continue;
      const el = $("chart-" + spec.id);
      const series = spec.series.map(([name, fn], n) => {
        const values = [];
        for (let i = first; i < state.frames.length; i++) {
          const v = fn(state.frames[i], i);
          values.push(v === null || v === undefined || Number.isNaN(v) ? null : v);
        }
        return { name, color: color(n), values };
      });
      let view = chartViews.get(spec.id);
      if (!view) {
        view = new TtsCharts.LineChart(el.querySelector("canvas"), { thresholds: (spec.thresholds || [])
          .filter((v) => v).map((value) => ({ value })), max: spec.max });
        chartViews.set(spec.id, view);
      }
      view.draw({ t, series }, windowMs);
      el.querySelector(".now").textContent = series.map((s) => s.name + " " +
        num(s.values[s.values.length - 1], spec.digits) + (spec.unit && spec.unit !== "×" ? " " + spec.unit : "")).join(" · ");
    }
  }

  // ---------- alerts ----------
  function sevTag(sev) { return '<span class="sev ' + esc(sev) + '">' + esc(sev || "alert") + "</span>"; }
  // An alert of GET /admin/alerts (tts-alerts' AlertView), reduced to what the page shows.
  function normaliseAlert(a) {
    const scope = Object.entries(a.scope || {}).map(([k, v]) => k + "=" + v).join(", ");
    return {
      id: a.id, name: a.rule + (scope ? " {" + scope + "}" : ""), severity: a.level, kind: a.kind,
      state: a.state, summary: a.summary, description: a.description, value: a.value ?? null,
      since: timeOf(a.firing_since || a.pending_since), ended: timeOf(a.resolved_at), resolvedBy: a.resolved_by,
      acknowledged: Boolean(a.ack), ackBy: a.ack && a.ack.who, ackReason: a.ack && a.ack.why,
    };
  }
  async function pollAlerts() {
    const r = await getJson("/admin/alerts");
    if (r.status === 404) { state.alertsStatus = "unavailable"; state.alerts = null; }
    else if (r.status !== 200) { state.alertsStatus = r.error || "HTTP " + r.status; }
    else {
      const active = (r.data.active || []).map(normaliseAlert);
      // History is oldest first; the page shows the newest first.
      const recent = (r.data.history || []).map(normaliseAlert).reverse();
      state.alerts = { active, recent };
      state.alertsStatus = "ok";
    }
    const firing = firingAlerts();
    const badge = $("alert-badge");
    badge.hidden = !firing || !firing.length;
    badge.textContent = firing ? firing.length : "";
    if (state.tab === "overview") renderOverviewAlerts();
    if (state.tab === "alerts") renderAlerts();
  }
  async function pollThresholds() {
    const r = await getJson("/admin/alerts/thresholds");
    state.thresholds = r.status === 200 ? r.data : r.status === 404 ? "unavailable" : null;
  }
  function alertRows(list, actions) {
    if (!list.length) return '<div class="muted">None.</div>';
    let html = "<table><tr><th>Severity</th><th>Alert</th><th>Summary</th><th>State</th><th class=\"num\">Since</th>" +
      (actions ? "<th></th>" : "") + "</tr>";
    for (const a of list) {
      html += "<tr data-alert=\"" + esc(a.id) + "\"><td>" + sevTag(a.severity) + "</td><td>" + esc(a.name) +
        "</td><td>" + esc(a.summary) + (a.value !== null ? ' <span class="muted">(value ' + esc(num(a.value, 3)) + ")</span>" : "") +
        "</td><td>" + esc(a.state) + (a.acknowledged ? '<div class="muted">acknowledged' + (a.ackBy ? " by " + esc(a.ackBy) : "") +
        (a.ackReason ? ": " + esc(a.ackReason) : "") + "</div>" : "") + '</td><td class="num">' + ago(a.since) + "</td>" +
        (actions ? '<td class="num"><button class="btn" data-act="ack"' + (a.acknowledged ? " disabled" : "") +
          '>Acknowledge</button> <button class="btn primary" data-act="resolve">Resolve</button></td>' : "") + "</tr>";
    }
    return html + "</table>";
  }
  function renderAlerts() {
    if (state.alertsStatus === "unavailable") {
      $("alerts-active").innerHTML = unavailable("Alerting", "/admin/alerts");
      $("alerts-recent").closest(".panel").hidden = true;
      $("alerts-thresholds").closest(".panel").hidden = true;
      return;
    }
    $("alerts-recent").closest(".panel").hidden = false;
    $("alerts-thresholds").closest(".panel").hidden = false;
    if (!state.alerts) { $("alerts-active").innerHTML = '<span class="muted">' + esc(state.alertsStatus) + "</span>"; return; }
    $("alerts-active").innerHTML = alertRows(state.alerts.active, true);
    $("alerts-recent").innerHTML = alertRows(state.alerts.recent.slice(0, 50), false);
    // An alert's generatorURL is /dashboard#alerts/<id>: mark that alert.
    const linked = /^#alerts\/(\d+)$/.exec(location.hash);
    if (linked) {
      for (const row of document.querySelectorAll('#tab-alerts tr[data-alert="' + linked[1] + '"]')) row.classList.add("linked");
    }
    renderThresholds();
  }
  function renderThresholds() {
    const t = state.thresholds;
    if (t === "unavailable") { $("alerts-thresholds").innerHTML = unavailable("Threshold editing", "/admin/alerts/thresholds"); return; }
    if (!t) { $("alerts-thresholds").innerHTML = '<span class="muted">Loading…</span>'; return; }
    const level = (l) => (l ? num(l.trigger, 3) + ' <span class="muted">(clears ' + num(l.clear, 3) + ")</span>" : "—");
    let html = "<table><tr><th>Rule</th><th>Signal</th><th>Scope</th><th>Worse when</th><th class=\"num\">Warning</th>" +
      '<th class="num">Critical</th><th class="num">Emergency</th><th class="num">For</th></tr>';
    for (const [name, r] of Object.entries(t)) {
      const scope = Object.entries(r.scope_filter || {}).map(([k, v]) => k + "=" + v).join(", ");
      html += "<tr><td>" + esc(name) + '</td><td class="mono">' + esc(r.signal) + "</td><td>" + esc(scope || "all") +
        "</td><td>" + esc(r.direction === "lower_is_worse" ? "lower" : "higher") + '</td><td class="num">' + level(r.warning) +
        '</td><td class="num">' + level(r.critical) + '</td><td class="num">' + level(r.emergency) + '</td><td class="num">' +
        num(r.for_seconds, 0) + " s</td></tr>";
    }
    $("alerts-thresholds").innerHTML = html + "</table>" +
      '<div class="muted note">Change them with <code>PUT /admin/alerts/thresholds</code>.</div>';
  }
  async function alertAction(id, act) {
    const response = await fetch("/admin/alerts/" + encodeURIComponent(id) + "/" + (act === "ack" ? "ack" : "resolve"), {
      method: "POST", headers: Object.assign({ "Content-Type": "application/json" }, authHeaders()),
      body: JSON.stringify(act === "ack" ? { who: "dashboard", why: "Acknowledged from the dashboard." } : { who: "dashboard" }),
    });
    if (response.status === 401 || response.status === 403) {
      $("token-bar").hidden = false;
      $("token-note").textContent = "The server needs the admin token for this (" + response.status + "): fill in the field above.";
      $("token").focus();
    } else if (!response.ok) {
      const text = (await response.text()).trim();
      let message = text;
      try { message = JSON.parse(text).error || text; } catch (error) { /* plain text */ }
      $("alert-note").textContent = message || "HTTP " + response.status;
    } else {
      $("alert-note").textContent = (act === "ack" ? "Acknowledged" : "Resolved") + " alert " + id + ".";
    }
    await pollAlerts();
  }

  // ---------- traces ----------
  // GET /admin/traces answers traces (one per session) of held spans; the page cuts each into its
  // utterances: the `utterance` span, its descendants, and the controls (barge-in) that fall inside it.
  function stagesOf(utterance, spans) {
    const children = new Map();
    for (const s of spans) {
      if (!children.has(s.parent_span_id)) children.set(s.parent_span_id, []);
      children.get(s.parent_span_id).push(s);
    }
    const t0 = timeOf(utterance.start), end = t0 + utterance.duration_ms;
    const a = utterance.attributes || {};
    const rows = [{ name: "utterance", cls: "", start: 0, dur: utterance.duration_ms }];
    if (a["tts.first_audio_ms"] !== undefined) {
      rows.push({ name: "text → first audio", cls: "frame", start: 0, dur: Number(a["tts.first_audio_ms"]) });
    }
    const walk = (id, depth) => {
      for (const c of (children.get(id) || []).sort((x, y) => timeOf(x.start) - timeOf(y.start))) {
        const start = timeOf(c.start) - t0, ca = c.attributes || {};
        if (c.name === "synthesize" && ca["tts.queue_wait_ms"] !== undefined) {
          const wait = Number(ca["tts.queue_wait_ms"]);
          rows.push({ name: "queue wait", cls: "queue", start: start - wait, dur: wait, depth });
        }
        const label = c.name === "synthesize" ? "chunk" + (ca["tts.first_chunk"] ? " (first)" : "") +
          (ca["tts.characters"] !== undefined ? " · " + ca["tts.characters"] + " chars" : "") : c.name;
        rows.push({ name: label, cls: spanClass(c.name), start, dur: c.duration_ms, depth,
          error: ca["otel.status_code"] === "ERROR" || c.level === "ERROR" });
        walk(c.span_id, depth + 1);
      }
    };
    walk(utterance.span_id, 1);
    for (const c of spans) {
      const at = timeOf(c.start);
      if (c.name === "control" && at >= t0 && at <= end) {
        const ca = c.attributes || {};
        const barge = ca["tts.barge_in_ms"];
        rows.push({ name: (ca["tts.command"] || "control") + (barge !== undefined ? " → barge-in" : ""), cls: "barge",
          start: at - t0, dur: barge !== undefined ? Number(barge) : c.duration_ms });
      }
    }
    return rows;
  }
  function spanClass(name) {
    if (/queue/.test(name)) return "queue";
    if (/control|barge/.test(name)) return "barge";
    if (/synth|engine|inference|chunk/.test(name)) return "engine";
    return "";
  }
  function utterancesOf(traces) {
    const list = [];
    for (const t of traces) {
      for (const u of t.spans.filter((s) => s.name === "utterance")) list.push({ trace: t, utterance: u });
    }
    return list.sort((a, b) => timeOf(b.utterance.start) - timeOf(a.utterance.start));
  }
  function renderUtterance({ trace, utterance }) {
    const a = utterance.attributes || {};
    const rows = stagesOf(utterance, trace.spans);
    const lo = Math.min(0, ...rows.map((r) => r.start));
    const span = Math.max(1, ...rows.map((r) => r.start + r.dur)) - lo;
    let html = '<div class="trace"><div class="meta"><span>trace <b class="mono">' + esc(trace.trace_id) + "</b></span>" +
      '<span>session <b class="mono">' + esc(trace.session_id || a.session_id || "—") + "</b></span><span>utterance <b>" +
      esc(a.utterance_id ?? "—") + "</b></span>" + (a["tts.voice"] ? "<span>voice <b>" + esc(a["tts.voice"]) + "</b></span>" : "") +
      "<span>first audio <b>" + num(a["tts.first_audio_ms"] ?? null, 1) + " ms</b></span><span>total <b>" +
      num(utterance.duration_ms, 1) + " ms</b></span>" + (a["tts.outcome"] ? "<span>outcome <b>" + esc(a["tts.outcome"]) +
      "</b></span>" : "") + "<span>" + esc(ago(timeOf(utterance.start))) + "</span></div><div class=\"spans\">";
    for (const r of rows.slice(0, 40)) {
      html += '<div class="name" title="' + esc(r.name) + '">' + "&nbsp;".repeat(2 * (r.depth || 0)) + esc(r.name) +
        '</div><div class="track"><div class="bar ' + r.cls + (r.error ? " error" : "") + '" data-l="' +
        ((100 * (r.start - lo)) / span).toFixed(2) + '" data-w="' + Math.max(0.3, (100 * r.dur) / span).toFixed(2) +
        '"></div></div><div class="dur">' + num(r.dur, 1) + " ms</div>";
    }
    if (rows.length > 40) html += '<div class="name muted">' + (rows.length - 40) + " more</div><div></div><div></div>";
    return html + "</div></div>";
  }
  async function pollTraces() {
    const session = $("trace-session").value.trim();
    const r = await getJson("/admin/traces?limit=20" + (session ? "&session_id=" + encodeURIComponent(session) : ""));
    if (r.status === 404) { $("traces").innerHTML = unavailable("The trace buffer", "/admin/traces"); $("trace-note").textContent = ""; return; }
    if (r.status !== 200) { $("trace-note").textContent = r.error || "HTTP " + r.status; return; }
    const list = utterancesOf(r.data.traces || []).slice(0, 25);
    $("trace-note").textContent = list.length + " recent utterance" + (list.length === 1 ? "" : "s") +
      (session ? " of session " + session : "") + ", newest first · buffer " + (r.data.buffer ? r.data.buffer.records +
      " of " + r.data.buffer.max_records + " spans" : "");
    $("traces").innerHTML = list.length ? list.map(renderUtterance).join("") : '<div class="muted">No finished utterance held yet.</div>';
    applyDataStyles($("traces"));
  }

  // ---------- logs ----------
  const LOG_KEEP = 1000;
  const LOG_SKIP = ["seq", "timestamp", "level", "target", "message"];
  function logLine(l) {
    const f = Object.entries(l).filter(([k, v]) => !LOG_SKIP.includes(k) && typeof v !== "object")
      .map(([k, v]) => k + "=" + v).join(" ");
    const ts = timeOf(l.timestamp);
    const level = String(l.level).toUpperCase();
    return '<div class="log"><span class="muted">' + esc(ts ? TtsCharts.clock(ts) + "." + String(ts % 1000).padStart(3, "0") : "") +
      '</span><span class="lvl ' + esc(level) + '">' + esc(level) + '</span><span class="tgt" title="' + esc(l.target) + '">' +
      esc(l.target) + "</span><span>" + esc(l.message) + ' <span class="fields">' + esc(f) + "</span></span></div>";
  }
  function logQuery() {
    const q = new URLSearchParams({ limit: "500" });
    if ($("log-level").value) q.set("level", $("log-level").value);
    if ($("log-target").value.trim()) q.set("target", $("log-target").value.trim());
    if ($("log-session").value.trim()) q.set("session_id", $("log-session").value.trim());
    if (state.logCursor) q.set("after", String(state.logCursor));
    return q;
  }
  function resetLogs() { state.logs = []; state.logCursor = null; pollLogs(); }
  async function pollLogs() {
    if (state.logBusy) return;
    state.logBusy = true;
    try {
      const r = await getJson("/admin/logs?" + logQuery().toString());
      if (r.status === 404) { $("logs").innerHTML = unavailable("The log buffer", "/admin/logs"); return; }
      if (r.status !== 200) { $("log-note").textContent = r.error || "HTTP " + r.status; return; }
      const fresh = r.data.logs || [];
      if (fresh.length) state.logCursor = fresh[fresh.length - 1].seq;
      state.logs = state.logs.concat(fresh).slice(-LOG_KEEP);
      $("log-note").textContent = state.logs.length + " line" + (state.logs.length === 1 ? "" : "s") + " shown" +
        (r.data.buffer ? " · buffer " + r.data.buffer.records + " of " + r.data.buffer.max_records : "");
      if (!fresh.length && $("logs").childElementCount) return;
      const box = $("logs");
      box.innerHTML = state.logs.length ? state.logs.map(logLine).join("") : '<div class="log muted">No line matches.</div>';
      if ($("log-follow").checked) box.scrollTop = box.scrollHeight;
    } finally {
      state.logBusy = false;
    }
  }

  // ---------- wiring ----------
  function render() {
    const frame = latest();
    if (!frame) return;
    renderHeader(frame);
    if (state.tab === "overview") renderOverview();
    if (state.tab === "metrics") renderMetrics();
  }
  function select(tab) {
    state.tab = tab;
    for (const b of document.querySelectorAll(".tabs button")) b.setAttribute("aria-selected", String(b.dataset.tab === tab));
    for (const s of document.querySelectorAll("section.tab")) s.hidden = s.dataset.tab !== tab;
    if (location.hash.split("/")[0] !== "#" + tab) history.replaceState(null, "", "#" + tab);
    render();
    if (tab === "alerts") { pollThresholds().then(renderAlerts); pollAlerts(); }
    if (tab === "traces") pollTraces();
    if (tab === "logs") pollLogs();
  }
  function connect() {
    const source = new EventSource("/dashboard/events?backfill=" + MAX_FRAMES);
    source.addEventListener("open", () => { $("conn").textContent = "live"; $("conn").className = "conn-state live"; });
    source.addEventListener("error", () => { $("conn").textContent = "reconnecting"; $("conn").className = "conn-state down"; });
    source.addEventListener("snapshot", (event) => {
      const frame = JSON.parse(event.data);
      if (frame.seq <= state.lastSeq) return;
      state.lastSeq = frame.seq;
      state.frames.push(frame);
      if (state.frames.length > MAX_FRAMES) state.frames.splice(0, state.frames.length - MAX_FRAMES);
      if (!state.pending) {
        state.pending = true;
        requestAnimationFrame(() => { state.pending = false; render(); });
      }
    });
  }
  function init() {
    for (const b of document.querySelectorAll(".tabs button")) b.addEventListener("click", () => select(b.dataset.tab));
    $("window").addEventListener("change", () => { state.windowS = Number($("window").value); renderMetrics(); });
    $("trace-refresh").addEventListener("click", pollTraces);
    $("trace-session").addEventListener("change", pollTraces);
    for (const id of ["log-level", "log-target", "log-session"]) $(id).addEventListener("change", resetLogs);
    $("token").value = sessionStorage.getItem(TOKEN_KEY) || "";
    $("token-bar").hidden = !$("token").value;
    $("token").addEventListener("change", () => {
      const v = $("token").value.trim();
      if (v) sessionStorage.setItem(TOKEN_KEY, v); else sessionStorage.removeItem(TOKEN_KEY);
      $("token-note").textContent = v ? "Token kept for this browser tab only." : "";
    });
    $("alerts-active").addEventListener("click", (event) => {
      const button = event.target.closest("button[data-act]");
      if (!button) return;
      button.disabled = true;
      alertAction(button.closest("tr").dataset.alert, button.dataset.act);
    });
    window.addEventListener("resize", () => { for (const v of chartViews.values()) v.redraw(); });
    connect();
    pollAlerts();
    setInterval(pollAlerts, 2000);
    setInterval(() => { if (state.tab === "logs") pollLogs(); }, 1000);
    setInterval(() => { if (state.tab === "traces" && document.activeElement !== $("trace-session")) pollTraces(); }, 3000);
    const tab = location.hash.slice(1).split("/")[0];
    select(["overview", "metrics", "traces", "alerts", "logs"].includes(tab) ? tab : "overview");
  }
  init();
})();
