// sloguard's live SLO dashboard. Plain browser JavaScript: no build step, no library.
//
// Data: GET {api} (live status of every capability), GET {api}/breaches?status=open
// (also shown as events: breaches already open when the page opens), GET {api}/history
// (to seed the charts), GET {api}/compliance (each capability's last 30 days), and the
// {api}/ws WebSocket when the server has one. #/capability/{verb:name} is the page of
// one capability: its card, its 30 days, its breaches and their incident reports. With the socket open, every event is shown at once and the status is
// re-read after it (and every 5 s); when the socket fails or closes, the page polls
// GET {api} every 2 s and tries the socket again every 30 s. A field the server does
// not send is shown as "—".
"use strict";

(() => {
  const API = document.querySelector('meta[name="sloguard-api"]').content;
  const STATUS = document.querySelector('meta[name="sloguard-status"]').content;
  const POLL_MS = 2000;
  const LIVE_REFRESH_MS = 5000;
  const WS_RETRY_MS = 30000;
  const BREACHES_MS = 10000;
  const COMPLIANCE_MS = 5 * 60 * 1000;
  const CHART_SPAN_MS = 10 * 60 * 1000;
  const MAX_EVENTS = 50;
  const PRIORITIES = ["critical", "high", "normal", "low"];
  // Why admission refused, as the card names them: the limiter's reasons (the problem's
  // `error`), then the SLO-window policy's refusals (`shed` less the limiter's).
  const REASONS = [
    ["concurrency_limit", "at limit", "concurrency_limit: at the limit and not allowed to wait (low priority, or no queue)"],
    ["queue_full", "queue full", "queue_full: the queue was full of more important requests"],
    ["deadline", "deadline", "deadline: could not have answered within its latency target"],
    ["queue_timeout", "timed out", "queue_timeout: waited the longest wait allowed (queue.max_wait_ms)"],
    ["window", "window", "slo_violation: refused by the SLO-window policy (availability, budget burn)"],
  ];
  const DASH = "—";
  const SVG = "http://www.w3.org/2000/svg";
  const TOKEN_KEY = "sloguard-api-token";

  const state = {
    token: null,
    mode: "connecting", // "live" (WebSocket), "polling", "offline", "unauthorized"
    socket: null,
    timer: null,
    retryTimer: null,
    refreshing: null,
    cards: new Map(), // capability -> {root, fields, chart}
    series: new Map(), // capability -> [{t, p50, p95, p99}]
    seeded: new Set(),
    openBreaches: null, // capability -> [breach], null when the server keeps no history
    breachesAt: 0,
    compliance: null, // capability -> [daily record], null when the server keeps no history
    complianceAt: 0,
    announced: new Set(), // ids of open breaches already listed under Events
    view: null, // the capability whose page is shown, or null for all of them
    events: [],
  };

  // -- the token -------------------------------------------------------------------

  function loadToken() {
    const params = new URLSearchParams(location.search);
    const given = params.get("token");
    if (given) {
      sessionStorage.setItem(TOKEN_KEY, given);
      params.delete("token"); // out of the address bar, the history and screenshots
      const query = params.toString();
      history.replaceState(null, "", location.pathname + (query ? "?" + query : "") + location.hash);
    }
    state.token = sessionStorage.getItem(TOKEN_KEY);
  }

  function askForToken(message) {
    setMode("unauthorized");
    const form = document.getElementById("token-form");
    form.hidden = false;
    document.getElementById("token-error").textContent = message || "";
    document.getElementById("token-input").focus();
  }

  function onTokenSubmit(event) {
    event.preventDefault();
    const value = document.getElementById("token-input").value.trim();
    if (!value) return;
    state.token = value;
    sessionStorage.setItem(TOKEN_KEY, value);
    document.getElementById("token-form").hidden = true;
    start();
  }

  class Unauthorized extends Error {}

  async function api(path, method) {
    const headers = state.token ? { Authorization: "Bearer " + state.token } : {};
    const response = await fetch(path ? API + path : STATUS, { method: method || "GET", headers, cache: "no-store" });
    if (response.status === 401) {
      throw new Unauthorized(state.token ? "the token was refused" : "");
    }
    return response;
  }

  // -- connection ------------------------------------------------------------------

  function setMode(mode) {
    state.mode = mode;
    const pill = document.getElementById("connection");
    pill.dataset.state = mode;
    pill.textContent = {
      connecting: "connecting…",
      live: "live (WebSocket)",
      polling: "polling every " + POLL_MS / 1000 + " s",
      offline: "server unreachable, retrying",
      unauthorized: "API token needed",
    }[mode];
    renderEvents();
  }

  function stopTimers() {
    clearInterval(state.timer);
    clearTimeout(state.retryTimer);
    state.timer = state.retryTimer = null;
  }

  function start() {
    stopTimers();
    if (state.socket) {
      state.socket.onclose = null;
      state.socket.close();
      state.socket = null;
    }
    setMode("connecting");
    refresh();
    openSocket();
  }

  function openSocket() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = state.token ? "?token=" + encodeURIComponent(state.token) : "";
    let socket;
    try {
      socket = new WebSocket(scheme + "//" + location.host + API + "/ws" + query);
    } catch (error) {
      fallBack();
      return;
    }
    state.socket = socket;
    socket.onopen = () => {
      clearInterval(state.timer);
      clearTimeout(state.retryTimer);
      state.timer = setInterval(refresh, LIVE_REFRESH_MS);
      setMode("live");
      refresh();
    };
    socket.onmessage = (message) => {
      let event;
      try {
        event = JSON.parse(message.data);
      } catch (error) {
        return;
      }
      onEvent(event);
    };
    socket.onclose = () => {
      if (state.socket === socket) {
        state.socket = null;
        fallBack();
      }
    };
  }

  function fallBack() {
    if (state.mode === "unauthorized") return;
    clearInterval(state.timer);
    state.timer = setInterval(refresh, POLL_MS);
    if (state.mode !== "offline") setMode("polling");
    clearTimeout(state.retryTimer);
    state.retryTimer = setTimeout(openSocket, WS_RETRY_MS);
  }

  async function refresh() {
    if (state.refreshing) return state.refreshing;
    state.refreshing = (async () => {
      try {
        const response = await api("");
        if (!response.ok) throw new Error(API + " answered " + response.status);
        const doc = await response.json();
        showProblem(null);
        if (state.mode === "offline" || state.mode === "connecting") {
          setMode(state.socket && state.socket.readyState === WebSocket.OPEN ? "live" : "polling");
        }
        await maybeReadBreaches();
        await maybeReadCompliance();
        render(doc);
      } catch (error) {
        if (error instanceof Unauthorized) {
          stopTimers();
          askForToken(error.message);
        } else {
          setMode("offline");
          if (!state.timer) fallBack();
          showProblem("Cannot read " + API + ": " + error.message);
        }
      } finally {
        state.refreshing = null;
      }
    })();
    return state.refreshing;
  }

  async function maybeReadBreaches(force) {
    if (!force && Date.now() - state.breachesAt < BREACHES_MS) return;
    state.breachesAt = Date.now();
    try {
      const response = await api("/breaches?status=open");
      if (!response.ok) {
        state.openBreaches = null; // 503: this server keeps no history
        return;
      }
      const byCapability = new Map();
      for (const breach of (await response.json()).breaches || []) {
        const list = byCapability.get(breach.capability) || [];
        list.push(breach);
        byCapability.set(breach.capability, list);
        announce(breach);
      }
      state.openBreaches = byCapability;
    } catch (error) {
      if (error instanceof Unauthorized) throw error;
      state.openBreaches = null;
    }
  }

  // A breach open before the page opened is an event the page never received: list it.
  function announce(breach) {
    if (state.announced.has(breach.id)) return;
    state.announced.add(breach.id);
    state.events.push({
      type: "breach",
      capability: breach.capability,
      at: breach.started_at,
      data: { violations: breach.violations || [], open: true },
    });
    state.events.sort((a, b) => (Date.parse(b.at) || 0) - (Date.parse(a.at) || 0));
    state.events.length = Math.min(state.events.length, MAX_EVENTS);
    renderEvents();
  }

  async function maybeReadCompliance() {
    if (Date.now() - state.complianceAt < COMPLIANCE_MS) return;
    state.complianceAt = Date.now();
    try {
      const response = await api("/compliance");
      if (!response.ok) {
        state.compliance = null; // 503: this server keeps no history
        return;
      }
      const byCapability = new Map();
      for (const report of (await response.json()).reports || []) {
        byCapability.set(report.capability, report.records || []);
      }
      state.compliance = byCapability;
    } catch (error) {
      if (error instanceof Unauthorized) throw error;
      state.compliance = null;
    }
  }

  async function seedHistory(capability) {
    state.seeded.add(capability);
    const since = Math.floor((Date.now() - CHART_SPAN_MS) / 1000);
    try {
      const path = "/history?capability=" + encodeURIComponent(capability) + "&since=" + since;
      const response = await api(path + "&step=60");
      if (!response.ok) return; // no history store: the chart starts empty
      const points = (await response.json()).points || [];
      const series = seriesOf(capability);
      const seeded = points
        .filter((p) => p.requests > 0)
        .map((p) => ({ t: p.start * 1000 + 30000, p50: p.p50_ms, p95: p.p95_ms, p99: p.p99_ms }));
      series.unshift(...seeded.filter((p) => !series.length || p.t < series[0].t));
      const card = state.cards.get(capability);
      if (card) drawChart(card, capability);
    } catch (error) {
      // the chart starts empty
    }
  }

  // -- events (WebSocket) ------------------------------------------------------------

  function onEvent(event) {
    if (!event || typeof event !== "object") return;
    state.events.unshift(event);
    state.events.length = Math.min(state.events.length, MAX_EVENTS);
    renderEvents();
    const card = state.cards.get(event.capability);
    const data = event.data || {};
    // Both carry the fields of the /slo status's `shedding`: shown at once, before the re-read.
    if (card && event.type === "shedding" && typeof data.active === "boolean") {
      showShedding(card, data);
      if (data.concurrency) showAdmission(card, data);
    }
    if (card && event.type === "concurrency" && data.concurrency && typeof data.concurrency === "object") {
      showAdmission(card, { ...((card.status && card.status.shedding) || {}), concurrency: data.concurrency });
    }
    if (["breach", "warning", "resolved"].includes(event.type)) state.breachesAt = 0;
    refresh();
  }

  function eventSummary(event) {
    const data = event.data || {};
    if (typeof data.summary === "string") return data.summary;
    const open = data.open ? "already open: " : "";
    if (Array.isArray(data.violations) && data.violations.length) return open + data.violations.join("; ");
    if (event.type === "shedding" && typeof data.active === "boolean") {
      const ratios = ratiosText(data.rejection_ratios);
      return (data.active ? "shedding started" : "shedding stopped") + (ratios ? ": " + ratios : "");
    }
    const text = JSON.stringify(data);
    return text === "{}" ? "" : text;
  }

  function renderEvents() {
    const list = document.getElementById("events");
    list.replaceChildren(
      ...state.events.map((event) => {
        const item = el("li", { "data-type": String(event.type) });
        item.append(
          el("time", {}, timeText(event.at)),
          " ",
          el("span", { class: "event-type" }, String(event.type)),
          " ",
          el("strong", {}, String(event.capability || "")),
          " ",
          eventSummary(event),
        );
        return item;
      }),
    );
    if (!state.events.length) {
      const note = state.mode === "live" ? "none yet" : "none: events (breaches, alerts, shedding, the concurrency limit) arrive over " + API + "/ws, which is not connected";
      list.append(el("li", { class: "muted" }, note));
    }
  }

  // -- rendering -------------------------------------------------------------------

  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
    node.append(...children);
    return node;
  }

  function svg(tag, attributes) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
    return node;
  }

  function isNumber(value) {
    return typeof value === "number" && Number.isFinite(value);
  }

  function ms(value) {
    if (!isNumber(value)) return DASH;
    return (value < 10 ? value.toFixed(1) : Math.round(value).toString()) + " ms";
  }

  function percent(value, digits) {
    return isNumber(value) ? (value * 100).toFixed(digits === undefined ? 1 : digits) + "%" : DASH;
  }

  function timeText(at) {
    const date = typeof at === "number" ? new Date(at * 1000) : new Date(at);
    return Number.isNaN(date.getTime()) ? DASH : date.toLocaleTimeString();
  }

  function dateTimeText(at) {
    const date = new Date(at);
    return Number.isNaN(date.getTime()) ? DASH : date.toLocaleString();
  }

  function ratiosText(ratios) {
    if (!ratios || typeof ratios !== "object") return "";
    return PRIORITIES.filter((p) => isNumber(ratios[p]) && ratios[p] > 0)
      .map((p) => p + " " + percent(ratios[p], 0))
      .join(", ");
  }

  function showProblem(text) {
    const node = document.getElementById("problem");
    node.hidden = !text;
    node.textContent = text || "";
  }

  function seriesOf(capability) {
    if (!state.series.has(capability)) state.series.set(capability, []);
    return state.series.get(capability);
  }

  function render(doc) {
    const at = Date.parse(doc.at);
    document.getElementById("updated").textContent = "updated " + timeText(doc.at);
    const seen = new Set();
    const main = document.getElementById("cards");
    for (const status of doc.capabilities || []) {
      seen.add(status.capability);
      let card = state.cards.get(status.capability);
      if (!card) {
        card = createCard(status.capability);
        state.cards.set(status.capability, card);
        main.append(card.root);
      }
      if (!state.seeded.has(status.capability)) seedHistory(status.capability);
      const series = seriesOf(status.capability);
      if (Number.isFinite(at) && (!series.length || series[series.length - 1].t < at)) {
        series.push({ t: at, p50: status.p50_ms, p95: status.p95_ms, p99: status.p99_ms });
      }
      while (series.length && series[0].t < at - CHART_SPAN_MS) series.shift();
      updateCard(card, status);
      drawChart(card, status.capability);
      drawCompliance(card.compliance, state.compliance && state.compliance.get(status.capability), card.fields);
    }
    for (const [capability, card] of state.cards) {
      if (!seen.has(capability)) {
        card.root.remove();
        state.cards.delete(capability);
      }
    }
    if (!seen.size) {
      main.replaceChildren(el("p", { class: "muted" }, "No SLO files are loaded on this server."));
    } else {
      main.querySelector(":scope > p.muted")?.remove();
    }
    showProcessIdempotency(doc.idempotency);
    showView();
  }

  // The process's hit rate, once: a card shows its own capability's, when the server counts it.
  function showProcessIdempotency(idem) {
    const node = document.getElementById("idempotency-all");
    node.hidden = !(idem && isNumber(idem.hit_rate));
    if (!node.hidden) {
      node.textContent = "idempotency hit rate, all capabilities: " + percent(idem.hit_rate) + " (" + idem.hits + " hits, " + idem.misses + " misses)";
    }
  }

  // -- one capability's page (#/capability/verb:name) --------------------------------

  function viewOf(hash) {
    const match = /^#\/capability\/(.+)$/.exec(hash);
    return match ? decodeURIComponent(match[1]) : null;
  }

  function showView() {
    const view = state.view;
    document.body.dataset.view = view ? "capability" : "all";
    for (const [capability, card] of state.cards) card.root.hidden = view !== null && capability !== view;
    document.getElementById("crumbs").hidden = view === null;
    document.getElementById("detail").hidden = view === null;
    document.title = view ? view + ": sloguard" : "sloguard: live SLOs";
    if (view !== null) {
      drawCompliance(document.getElementById("detail-compliance"), state.compliance && state.compliance.get(view), null, true);
    }
  }

  async function openView() {
    state.view = viewOf(location.hash);
    document.getElementById("detail-report").hidden = true;
    showView();
    if (state.view === null) return;
    const body = document.querySelector("#detail-breaches tbody");
    body.replaceChildren(el("tr", {}, el("td", { colspan: "5", class: "muted" }, "loading…")));
    try {
      const response = await api("/breaches?capability=" + encodeURIComponent(state.view));
      const breaches = response.ok ? (await response.json()).breaches || [] : null;
      if (breaches === null) {
        body.replaceChildren(el("tr", {}, el("td", { colspan: "5", class: "muted" }, "this server keeps no breach history")));
      } else if (!breaches.length) {
        body.replaceChildren(el("tr", {}, el("td", { colspan: "5", class: "muted" }, "no breach recorded")));
      } else {
        body.replaceChildren(...breaches.map(breachRow));
      }
    } catch (error) {
      if (error instanceof Unauthorized) askForToken(error.message);
    }
  }

  function breachRow(breach) {
    const button = el("button", { type: "button" }, "incident report");
    button.addEventListener("click", () => showReport(breach));
    const row = el(
      "tr",
      { "data-state": String(breach.state), "data-breach": String(breach.id) },
      el("td", {}, String(breach.state)),
      el("td", {}, dateTimeText(breach.started_at)),
      el("td", {}, breach.ended_at ? dateTimeText(breach.ended_at) : "open"),
      el("td", {}, (breach.violations || []).join("; ")),
      el("td", {}, button),
    );
    return row;
  }

  async function showReport(breach) {
    const node = document.getElementById("detail-report");
    node.hidden = false;
    node.textContent = "loading…";
    try {
      const response = await api("/breaches/" + encodeURIComponent(breach.id) + "/report");
      node.textContent = response.ok ? await response.text() : "no report: " + API + " answered " + response.status;
    } catch (error) {
      node.textContent = "no report: " + error.message;
    }
  }

  // Daily compliance against the target: a green area, the target as a dashed line.
  function drawCompliance(container, records, fields, big) {
    const width = big ? 640 : 320, height = big ? 140 : 56, left = 38, right = 4, top = 4, bottom = big ? 16 : 12;
    const node = svg("svg", { viewBox: "0 0 " + width + " " + height, class: "compliance", role: "img" });
    const days = records || [];
    const values = days.map((d) => d.compliance_percentage).filter(isNumber);
    const target = days.length ? days[days.length - 1].target_percentage : null;
    const lowest = Math.min(...values, isNumber(target) ? target : 100);
    // The scale starts a little under the lowest of the days and the target: 100% at the top.
    const floor = Math.max(0, lowest - Math.max(0.05, (100 - lowest) * 0.5));
    const x = (i) => left + (days.length > 1 ? i / (days.length - 1) : 0.5) * (width - left - right);
    const y = (v) => top + (1 - (v - floor) / (100 - floor)) * (height - top - bottom);
    const parts = [svg("rect", { x: left, y: top, width: width - left - right, height: height - top - bottom, class: "plot" })];
    for (const v of [floor, 100]) {
      const label = svg("text", { x: left - 3, y: y(v) + 3, class: "axis", "text-anchor": "end" });
      label.textContent = (v === 100 ? "100" : v.toFixed(v >= 99 ? 2 : 1)) + "%";
      parts.push(label);
    }
    // One area per run of days with data: a day without requests is a gap, not a 0.
    let run = [];
    const runs = [];
    days.forEach((d, i) => {
      if (isNumber(d.compliance_percentage)) run.push([x(i), y(d.compliance_percentage)]);
      else if (run.length) (runs.push(run), (run = []));
    });
    if (run.length) runs.push(run);
    for (const points of runs) {
      if (points.length === 1) points.push([points[0][0] + 2, points[0][1]]);
      const line = points.map((p, i) => (i ? "L" : "M") + p[0].toFixed(1) + " " + p[1].toFixed(1)).join(" ");
      const base = y(floor).toFixed(1);
      parts.push(svg("path", { d: line + " L" + points[points.length - 1][0].toFixed(1) + " " + base + " L" + points[0][0].toFixed(1) + " " + base + " Z", class: "area" }));
      parts.push(svg("path", { d: line, class: "compliance-line" }));
    }
    if (isNumber(target)) {
      parts.push(svg("line", { x1: left, x2: width - right, y1: y(target), y2: y(target), class: "target" }));
    }
    const start = svg("text", { x: left, y: height - 2, class: "axis" });
    start.textContent = days.length ? days[0].date.slice(5) : "";
    const end = svg("text", { x: width - right, y: height - 2, class: "axis", "text-anchor": "end" });
    end.textContent = days.length ? "today" : "";
    parts.push(start, end);
    if (!values.length) {
      const empty = svg("text", { x: (width + left) / 2, y: height / 2 + 3, class: "axis", "text-anchor": "middle" });
      empty.textContent = records ? "no traffic in the last 30 days" : "no history kept by this server";
      parts.push(empty);
    }
    node.setAttribute("aria-label", "daily compliance over the last " + days.length + " days against the " + (isNumber(target) ? target + "%" : "") + " target");
    node.dataset.days = String(values.length);
    node.replaceChildren(...parts);
    container.replaceChildren(node);
    if (fields) {
      const mean = values.length ? values.reduce((a, b) => a + b, 0) / values.length : null;
      setText(
        fields.compliance,
        isNumber(mean) ? mean.toFixed(2) + "% over " + values.length + " days" : DASH,
        isNumber(mean) && isNumber(target) ? mean >= target : undefined,
      );
    }
  }

  function createCard(capability) {
    const fields = {};
    const value = (name) => (fields[name] = el("span", { "data-field": name }, DASH));
    const row = (label, ...cells) => el("tr", {}, el("th", { scope: "row" }, label), ...cells);
    const latency = el(
      "table",
      { class: "latency" },
      el("thead", {}, el("tr", {}, el("th", {}, ""), el("th", {}, "live"), el("th", {}, "target"))),
      el(
        "tbody",
        {},
        ...["p50", "p95", "p99"].map((p) =>
          row(p, el("td", {}, value(p)), el("td", {}, value(p + "-target"))),
        ),
        row("availability", el("td", {}, value("availability")), el("td", {}, value("availability-target"))),
      ),
    );
    const bar = el("span", { class: "bar-fill" });
    const chart = svg("svg", {
      viewBox: "0 0 320 120",
      class: "chart",
      role: "img",
    });
    const root = el(
      "article",
      { class: "card", "data-capability": capability },
      el("header", {}, el("h2", {}, el("a", { href: "#/capability/" + encodeURIComponent(capability) }, capability)), value("tier"), value("state")),
      el("p", { class: "muted" }, value("requests")),
      latency,
      el(
        "dl",
        {},
        el("dt", {}, "error budget left"),
        el("dd", {}, value("budget"), el("span", { class: "bar" }, bar)),
        el("dt", {}, "burn rate 5m / 1h / 6h"),
        el("dd", {}, value("burn-5m"), " / ", value("burn-1h"), " / ", value("burn-6h")),
        el("dt", {}, "shedding"),
        el("dd", { class: "wide" }, value("shedding")), // per priority: the longest value
        el("dt", {}, "concurrency limit"),
        el("dd", {}, value("limit")),
        el("dt", {}, "in flight / queued"),
        el("dd", {}, value("inflight"), " / ", value("queued")),
        el("dt", {}, "refused, by reason"),
        el("dd", { class: "wide" }, refusedTable(value)),
        el("dt", {}, "idempotency hit rate"),
        el("dd", {}, value("idempotency")),
        el("dt", {}, "open breaches"),
        el("dd", {}, value("breaches"), " ", (fields.ack = el("button", { type: "button", class: "ack", hidden: "" }, "Acknowledge"))),
        el("dt", {}, "daily compliance"),
        el("dd", {}, value("compliance")),
      ),
      el("ul", { class: "violations", "data-field": "violations" }),
      chart,
      el(
        "p",
        { class: "legend" },
        el("span", { class: "key p50" }, "p50"),
        el("span", { class: "key p95" }, "p95"),
        el("span", { class: "key p99" }, "p99"),
        el("span", { class: "key target" }, "p95 target"),
        value("span"),
      ),
    );
    const compliance = el("div", { class: "compliance-chart", "data-field": "compliance-chart" });
    root.append(compliance);
    fields.bar = bar;
    fields.violations = root.querySelector('[data-field="violations"]');
    fields.ack.addEventListener("click", () => acknowledge(fields.ack));
    return { root, fields, chart, compliance, status: null };
  }

  // One column per reason, the count below its name: every reason always in its place.
  function refusedTable(value) {
    return el(
      "table",
      { class: "refused", "data-field": "refused" },
      el("thead", {}, el("tr", {}, ...REASONS.map(([, label, why]) => el("th", { scope: "col", title: why }, label)))),
      el("tbody", {}, el("tr", {}, ...REASONS.map(([reason]) => el("td", {}, value("refused-" + reason))))),
    );
  }

  // Stops the escalation of the open breach the button shows (POST {api}/alerts/{id}/ack).
  async function acknowledge(button) {
    button.disabled = true;
    try {
      const response = await api("/alerts/" + encodeURIComponent(button.dataset.alertId) + "/ack", "POST");
      if (!response.ok) showProblem("acknowledging failed: HTTP " + response.status);
    } catch (error) {
      if (error instanceof Unauthorized) askForToken(error.message);
      else showProblem("acknowledging failed: " + error.message);
    }
    button.disabled = false;
    state.breachesAt = 0; // read the breaches again: the escalation has stopped
    await refresh();
  }

  function setText(node, text, good) {
    node.textContent = text;
    node.classList.toggle("bad", good === false);
    node.classList.toggle("good", good === true);
  }

  function updateCard(card, status) {
    card.status = status;
    const f = card.fields;
    const targets = status.targets || {};
    for (const p of ["p50", "p95", "p99"]) {
      const live = status[p + "_ms"];
      const target = targets[p + "_ms"];
      setText(f[p], ms(live), isNumber(live) && isNumber(target) ? live <= target : undefined);
      setText(f[p + "-target"], ms(target));
    }
    const availability = status.availability;
    setText(
      f.availability,
      percent(availability, 2),
      isNumber(availability) && isNumber(targets.availability) ? availability >= targets.availability : undefined,
    );
    setText(f["availability-target"], percent(targets.availability, 2));
    const windowText = isNumber(status.window_seconds) ? " in the last " + status.window_seconds + " s" : "";
    setText(
      f.requests,
      isNumber(status.requests)
        ? status.requests + " requests, " + (isNumber(status.errors) ? status.errors : DASH) + " errors" + windowText
        : DASH,
    );

    const budget = status.budget || {};
    const remaining = budget.remaining;
    setText(f.budget, percent(remaining), isNumber(remaining) ? remaining > 0 : undefined);
    f.bar.style.width = isNumber(remaining) ? Math.max(0, Math.min(1, remaining)) * 100 + "%" : "0";
    f.bar.classList.toggle("bad", isNumber(remaining) && remaining < 0.25);
    const burn = budget.burn_rates || {};
    for (const w of ["5m", "1h", "6h"]) {
      const rate = burn[w];
      setText(f["burn-" + w], isNumber(rate) ? rate.toFixed(1) + "×" : DASH, isNumber(rate) ? rate <= 1 : undefined);
    }

    showShedding(card, status.shedding);
    showAdmission(card, status.shedding);

    // This capability's own, when the server counts per capability (the process's is in the header).
    const idem = status.idempotency;
    if (idem && isNumber(idem.hit_rate)) {
      const counts = isNumber(idem.hits) && isNumber(idem.misses) ? " (" + idem.hits + " hits, " + idem.misses + " misses)" : "";
      setText(f.idempotency, percent(idem.hit_rate) + counts);
    } else {
      setText(f.idempotency, DASH);
    }

    if (state.openBreaches === null) {
      setText(f.breaches, DASH);
    } else {
      const open = state.openBreaches.get(status.capability) || [];
      setText(f.breaches, open.length ? open.length + " (since " + timeText(open[0].started_at) + ")" : "none", open.length === 0);
    }
    const escalating = (state.openBreaches?.get(status.capability) || []).find((b) => b.escalation && b.escalation.state === "escalating");
    f.ack.hidden = !escalating;
    if (escalating) {
      f.ack.dataset.alertId = escalating.id;
      f.ack.title = "escalation " + escalating.escalation.policy + ", level " + escalating.escalation.level + " notified";
    }
    setText(f.tier, status.tier ? "tier " + status.tier : "");
    f.violations.replaceChildren(...(status.violations || []).map((v) => el("li", {}, v)));

    let label = "ok";
    if (status.shedding && status.shedding.active) label = "shedding";
    else if (status.compliant === false) label = "violating";
    else if (!status.requests && !inFlight(status.shedding)) label = "no traffic"; // the window counts answers only
    f.state.textContent = label;
    f.state.className = "badge";
    f.state.dataset.state = label;
    card.root.dataset.state = label;
  }

  function showShedding(card, shedding) {
    const node = card.fields.shedding;
    if (!shedding || typeof shedding.active !== "boolean") {
      setText(node, DASH);
      return;
    }
    const parts = [];
    const ratios = shedding.rejection_ratios;
    const shed = windowRefusals(shedding) || {}; // the window policy's: the limit's have their row
    for (const p of PRIORITIES) {
      const ratio = ratios && isNumber(ratios[p]) ? ratios[p] : null;
      const count = isNumber(shed[p]) ? shed[p] : null;
      if ((ratio !== null && ratio > 0) || count) {
        parts.push(p + " " + (ratio !== null ? percent(ratio, 0) : DASH) + (count ? " (" + count + " shed)" : ""));
      }
    }
    const head = shedding.active ? "active" : "off";
    setText(node, parts.length ? head + ": " + parts.join(", ") : head, shedding.active ? false : true);
    node.dataset.active = String(shedding.active);
  }

  // The SLO-window policy's refusals by priority: every refusal is in `shed`, the limiter's
  // also in `concurrency.refused`. Null when the server does not count refusals.
  function windowRefusals(shedding) {
    const shed = shedding && shedding.shed;
    if (!shed || typeof shed !== "object") return null;
    const limiter = (shedding.concurrency && shedding.concurrency.refused) || {};
    const counts = {};
    for (const p of PRIORITIES) {
      const limited = Object.values(limiter).reduce((sum, by) => sum + (by && isNumber(by[p]) ? by[p] : 0), 0);
      const n = (isNumber(shed[p]) ? shed[p] : 0) - limited;
      if (n > 0) counts[p] = n;
    }
    return counts;
  }

  function inFlight(shedding) {
    const concurrency = shedding && shedding.concurrency;
    return concurrency && isNumber(concurrency.inflight) ? concurrency.inflight : 0;
  }

  function total(counts) {
    return Object.values(counts || {}).reduce((sum, n) => sum + (isNumber(n) ? n : 0), 0);
  }

  function byPriority(counts) {
    return PRIORITIES.filter((p) => counts && isNumber(counts[p]) && counts[p] > 0)
      .map((p) => p + " " + counts[p])
      .join(", ");
  }

  // The inner loop (the concurrency limit) and what each loop refused: `shedding.concurrency`
  // ({mode, limit, inflight, queued, refused: {reason: {priority: n}}}) and `shedding.shed`.
  function showAdmission(card, shedding) {
    const f = card.fields;
    const concurrency = shedding && shedding.concurrency;
    const mode = concurrency && typeof concurrency.mode === "string" ? concurrency.mode : null;
    const off = mode === "off";
    const limited = !off && concurrency && isNumber(concurrency.limit);
    if (off) setText(f.limit, "off (no limit)");
    else if (limited) setText(f.limit, concurrency.limit + (mode ? " (" + mode + ")" : ""));
    else setText(f.limit, mode ? DASH + " (" + mode + ")" : DASH);
    f.limit.dataset.mode = mode || "";
    f.limit.title = off ? "no concurrency limit: mode off, or the SLO file does not enforce" : limited ? "" : mode ? "no request yet" : "";
    setText(f.inflight, limited && isNumber(concurrency.inflight) ? String(concurrency.inflight) : DASH);
    setText(f.queued, limited && isNumber(concurrency.queued) ? String(concurrency.queued) : DASH);
    const refused = (limited && concurrency.refused) || {};
    const byWindow = windowRefusals(shedding);
    for (const [reason] of REASONS) {
      const counts = reason === "window" ? byWindow : limited ? refused[reason] || {} : null;
      const count = counts === null ? null : total(counts);
      setText(f["refused-" + reason], count === null ? DASH : String(count), count ? false : undefined);
      f["refused-" + reason].title = counts === null ? "" : byPriority(counts);
    }
  }

  function axisMs(value) {
    if (value >= 1000) return (value / 1000).toFixed(value >= 10000 ? 0 : 1) + " s";
    return value >= 10 || value === 0 ? Math.round(value) + " ms" : value.toFixed(1) + " ms";
  }

  function spanText(ms) {
    return ms >= 60000 ? "−" + Math.round(ms / 60000) + " min" : "−" + Math.round(ms / 1000) + " s";
  }

  // A line chart in SVG: p50, p95, p99 and the p95 target over the last minutes (at most
  // 10, at least 1: a page opened a moment ago shows what it has, not an empty 10 minutes).
  function drawChart(card, capability) {
    const chart = card.chart;
    const series = seriesOf(capability);
    const width = 320, height = 120, left = 44, right = 8, top = 8, bottom = 16;
    const target = card.status && card.status.targets ? card.status.targets.p95_ms : null;
    const values = series.flatMap((p) => [p.p50, p.p95, p.p99]).filter(isNumber);
    const highest = Math.max(1, ...values, isNumber(target) ? target : 0);
    const max = highest * 1.1;
    const now = series.length ? series[series.length - 1].t : Date.now();
    const first = series.length ? series[0].t : now;
    const span = Math.min(CHART_SPAN_MS, Math.max(60000, now - first));
    const x = (t) => left + (1 - (now - t) / span) * (width - left - right);
    // A spike far above the target would flatten everything else: then the scale is log.
    const log = isNumber(target) && highest > 4 * target;
    const floor = log ? Math.max(0.1, Math.min(target, ...values.filter((v) => v > 0)) / 2) : 0;
    const share = (v) =>
      log ? (Math.log10(Math.max(v, floor)) - Math.log10(floor)) / (Math.log10(max) - Math.log10(floor)) : v / max;
    const y = (v) => top + (1 - share(v)) * (height - top - bottom);
    const nodes = [
      svg("rect", { x: left, y: top, width: width - left - right, height: height - top - bottom, class: "plot" }),
    ];
    const ticks = [];
    if (log) {
      for (let v = 10 ** Math.ceil(Math.log10(floor)); v <= highest; v *= 10) ticks.push(v);
      const scale = svg("text", { x: left + 3, y: top + 9, class: "axis" });
      scale.textContent = "log scale";
      nodes.push(scale);
    } else {
      ticks.push(0, highest / 2, highest);
    }
    for (const v of ticks) {
      const label = svg("text", { x: left - 4, y: y(v) + 3, class: "axis", "text-anchor": "end" });
      label.textContent = axisMs(v);
      nodes.push(label, svg("line", { x1: left, x2: width - right, y1: y(v), y2: y(v), class: "grid" }));
    }
    const start = svg("text", { x: left, y: height - 3, class: "axis" });
    start.textContent = spanText(span);
    const end = svg("text", { x: width - right, y: height - 3, class: "axis", "text-anchor": "end" });
    end.textContent = "now";
    nodes.push(start, end);
    if (isNumber(target)) {
      nodes.push(svg("line", { x1: left, x2: width - right, y1: y(target), y2: y(target), class: "target" }));
    }
    for (const key of ["p50", "p95", "p99"]) {
      const points = series.filter((p) => isNumber(p[key]) && now - p.t <= span);
      if (!points.length) continue;
      const d = points.map((p, i) => (i ? "L" : "M") + x(p.t).toFixed(1) + " " + y(p[key]).toFixed(1)).join(" ");
      nodes.push(svg("path", { d, class: "line " + key }));
      const last = points[points.length - 1];
      nodes.push(svg("circle", { cx: x(last.t).toFixed(1), cy: y(last[key]).toFixed(1), r: 2.2, class: "dot " + key }));
    }
    if (!values.length) {
      const empty = svg("text", { x: (width + left) / 2, y: height / 2, class: "axis", "text-anchor": "middle" });
      empty.textContent = "no traffic yet";
      nodes.push(empty);
    }
    chart.setAttribute("aria-label", "p50, p95 and p99 latency over the last " + spanText(span).slice(1) + ", with the p95 target");
    card.fields.span.textContent = " last " + spanText(span).slice(1);
    chart.replaceChildren(...nodes);
  }

  // -- start -----------------------------------------------------------------------

  document.getElementById("token-form").addEventListener("submit", onTokenSubmit);
  window.addEventListener("hashchange", openView);
  loadToken();
  start();
  openView();
})();
