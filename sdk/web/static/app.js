// edgesdk live view: polls /api/stats, listens to /events (SSE), shows the app's panel.
// All data goes in through textContent, never innerHTML.
"use strict";
const token = new URLSearchParams(location.search).get("token");
const q = token ? "?token=" + encodeURIComponent(token) : "";
const $ = (id) => document.getElementById(id);
const scores = [];      // {t, score, threshold}, newest last
const triggers = [];    // stream times of detections
let app = "", drawPending = false;

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function fillGrid(dl, obj) {
  dl.replaceChildren();
  for (const [k, v] of Object.entries(obj)) {
    if (v === null || v === undefined || v === "") continue;
    dl.append(el("dt", k), el("dd", typeof v === "object" ? JSON.stringify(v) : String(v)));
  }
}

async function getJSON(path) {
  const r = await fetch(path + q, { cache: "no-store" });
  return { ok: r.ok, status: r.status, body: await r.json() };
}

async function loadInfo() {
  const { body } = await getJSON("/api/info");
  app = body.app;
  $("app").textContent = app;
  const m = body.model || {};
  $("model").textContent = [m.name && m.name.split("/").pop(), m.backend && (m.backend.backend + " / " + m.backend.delegate)].filter(Boolean).join(" · ");
  const card = m.card || {};
  fillGrid($("card"), { model: m.name, backend: m.backend && m.backend.backend, delegate: m.backend && m.backend.delegate,
    fallback: m.backend && m.backend.fallback, threads: m.backend && m.backend.threads, source: body.source,
    task: card.task, quantization: card.quantization && card.quantization.mode, ...(card.output || {}),
    ...(card.metrics || {}), license: card.license, version: card.edgesdk_version });
  const panel = $(app);
  if (panel) panel.hidden = false;
  if (app === "detect") $("stream").src = "/stream.mjpg" + q;
  if (app === "face") { pollFaces(); setInterval(pollFaces, 1000); }
}

function fmtUptime(s) {
  const h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60, sec = Math.floor(s % 60);
  return (h ? h + "h " : "") + (h || m ? m + "m " : "") + sec + "s";
}

async function pollStats() {
  try {
    const { body: s } = await getJSON("/api/stats");
    const rate = app === "trigger-word" ? "scores/s" : "FPS";  // one model run per hop
    fillGrid($("stats"), { [rate]: s.fps.toFixed(1), [app === "trigger-word" ? "scores" : "frames"]: s.frames, "dropped frames": s.dropped_frames,
      events: s.events, uptime: fmtUptime(s.uptime_s), viewers: s.viewers });
    const rows = [];
    for (const k of Object.keys(s)) {
      const m = k.match(/^latency_(.+)_p50_ms$/);
      if (m) rows.push(el("tr"));
      if (m) rows[rows.length - 1].append(el("td", m[1]), el("td", s[k].toFixed(2)), el("td", s["latency_" + m[1] + "_p90_ms"].toFixed(2)));
    }
    $("latency").replaceChildren(...rows);
    $("frame").textContent = s.frames;
    $("sent").textContent = s.frames_sent;
    $("viewers").textContent = s.viewers;
    const h = await fetch("/healthz" + q, { cache: "no-store" });
    const status = (await h.json()).status;
    $("health").textContent = status === "ok" ? "running" : status;
    $("health").className = "badge " + (status === "ok" ? "ok" : h.ok ? "" : "bad");
  } catch (e) {
    $("health").textContent = "disconnected";
    $("health").className = "badge bad";
  }
}

async function pollFaces() {
  const { body } = await getJSON("/api/faces");
  $("faces").replaceChildren(...body.latest.map((f) => {
    const tr = el("tr");
    tr.append(el("td", f.name ?? "unknown"), el("td", f.match ? "yes" : "no", f.match ? "match" : "nomatch"),
      el("td", f.distance == null ? (f.reason || "-") : f.distance.toFixed(3)), el("td", (f.threshold ?? 0).toFixed(3)),
      el("td", new Date(f.seen * 1000).toLocaleTimeString()));
    return tr;
  }));
  $("identities").replaceChildren(...body.identities.map((i) => el("li", `${i.name} (${i.embeddings} embeddings)`)));
}

function describe(ev) {
  if (ev.event) return `${ev.time.toFixed(2)} s  ${ev.word ?? ev.event}  score ${(ev.score ?? 0).toFixed(2)}`;
  if ("distance" in ev) return `${ev.name ?? "unknown"}: ${ev.match ? "MATCH" : "no match"}` + (ev.distance == null ? "" : ` (${ev.distance.toFixed(3)})`);
  if (ev.detections) return `frame ${ev.frame}: ` + ev.detections.map((d) => `${d.label} ${d.score.toFixed(2)}`).join(", ");
  return JSON.stringify(ev);
}

function listen() {
  const es = new EventSource("/events" + q);
  es.addEventListener("event", (m) => {
    const ev = JSON.parse(m.data);
    if (ev.event === "trigger") triggers.push(ev.time);
    const list = $("events");
    list.prepend(el("li", describe(ev)));
    while (list.children.length > 50) list.lastChild.remove();
    $("triggers").textContent = triggers.length;
    schedule();
  });
  es.addEventListener("score", (m) => {
    scores.push(JSON.parse(m.data));
    if (scores.length > 2000) scores.splice(0, scores.length - 2000);
    $("points").textContent = scores.length;
    schedule();
  });
}

function schedule() {
  if (app === "trigger-word" && !drawPending) { drawPending = true; requestAnimationFrame(draw); }
}

function draw() {
  drawPending = false;
  const c = $("timeline"), g = c.getContext("2d"), W = c.width, H = c.height;
  g.clearRect(0, 0, W, H);
  if (!scores.length) return;
  const t1 = scores[scores.length - 1].t, t0 = Math.max(scores[0].t, t1 - 30);
  const x = (t) => ((t - t0) / Math.max(t1 - t0, 1e-3)) * (W - 10) + 5, y = (s) => H - 5 - s * (H - 10);
  g.strokeStyle = "#f0883e"; g.setLineDash([6, 4]); g.beginPath();
  const thr = scores[scores.length - 1].threshold; g.moveTo(0, y(thr)); g.lineTo(W, y(thr)); g.stroke(); g.setLineDash([]);
  g.strokeStyle = "#58a6ff"; g.lineWidth = 2; g.beginPath();
  let first = true;
  for (const p of scores) { if (p.t < t0) continue; first ? g.moveTo(x(p.t), y(p.score)) : g.lineTo(x(p.t), y(p.score)); first = false; }
  g.stroke();
  g.fillStyle = "#3fb950";
  for (const t of triggers) if (t >= t0) { g.fillRect(x(t) - 1, 0, 3, H); }
  g.fillStyle = "#8a949e"; g.font = "11px sans-serif";
  g.fillText(`${t0.toFixed(1)} s`, 5, 12); g.fillText(`${t1.toFixed(1)} s`, W - 50, 12);
}

loadInfo().then(() => { pollStats(); setInterval(pollStats, 1000); listen(); });
