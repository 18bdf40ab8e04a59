// The console's behaviour in the browser: times in local time, live board (server-sent events),
// acknowledge/resolve through the API, keyboard shortcuts, the alarm page's map. No build step.
"use strict";
const nabij = (() => {
  const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content || "";
  const status = (text) => {
    const el = document.getElementById("status");
    el.hidden = !text;
    el.textContent = text || "";
  };
  const age = (s) => (s < 60 ? `${s} s` : s < 3600 ? `${Math.floor(s / 60)} min` : `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`);
  function times(root) {
    root.querySelectorAll("time[data-ms]").forEach((t) => {
      const d = new Date(Number(t.dataset.ms));
      t.dateTime = d.toISOString();
      t.textContent = d.toLocaleTimeString();
    });
    root.querySelectorAll("[data-age]").forEach((el) => { el.textContent = age(Number(el.dataset.age)); });
  }
  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST", headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
      body: JSON.stringify(body || {}),
    });
    if (response.status === 401) { location.href = "/login?expired=1"; return null; }
    const answer = await response.json().catch(() => ({ detail: `HTTP ${response.status}` }));
    return answer.message || answer.detail || JSON.stringify(answer);
  }
  async function acknowledge(button) {
    if (button.disabled) return;
    button.disabled = true;  // a double click sends one request; the gateway keeps one ack anyway
    const message = await post(`/api/alarms/${encodeURIComponent(button.dataset.alarmId)}/ack`, {});
    const out = document.getElementById("outcome");
    if (out && message) out.textContent = message;
  }
  document.addEventListener("click", (e) => {
    const ack = e.target.closest(".ack-button");
    if (ack) acknowledge(ack);
  });
  document.getElementById("logout")?.addEventListener("click", async () => {
    await post("/api/logout");
    location.href = "/login";
  });
  const form = document.getElementById("login-form");
  form?.addEventListener("submit", async (e) => {
    e.preventDefault();
    const response = await fetch("/api/login", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name: form.name.value, password: form.password.value }),
    });
    if (response.ok) { location.href = "/board"; return; }
    const answer = await response.json().catch(() => ({}));
    document.getElementById("login-error").textContent = answer.detail || `HTTP ${response.status}`;
  });
  function live(onNotice) {
    const source = new EventSource("/api/events");
    source.addEventListener("notice", (e) => onNotice(JSON.parse(e.data)));
    source.addEventListener("fault", (e) => status(JSON.parse(e.data).message));
    source.addEventListener("status", (e) => {
      const s = JSON.parse(e.data);
      status(!s.redis ? "Redis cannot be reached: retrying. Nothing is lost."
        : !s.gateway ? "The gateway is not answering: acknowledgements wait and are applied when it returns." : "");
      document.getElementById("gateway-down")?.remove();
    });
    source.addEventListener("expired", () => { location.href = "/login?expired=1"; });
    source.onerror = () => status("Connection to the console lost: reconnecting…");
    source.onopen = () => status("");
  }
  function board() {
    const table = document.getElementById("board");
    const banner = document.getElementById("banner");
    let focused = null;
    async function refresh() {
      const response = await fetch("/board/rows");
      if (response.status === 401 || response.redirected) { location.href = "/login?expired=1"; return; }
      if (!response.ok) return;
      table.querySelectorAll("tbody").forEach((b) => b.remove());
      table.insertAdjacentHTML("beforeend", await response.text());
      times(table);
      if (focused) table.querySelector(`tr[data-alarm-id="${CSS.escape(focused)}"]`)?.focus();
    }
    live((n) => {
      refresh();
      if (n.priority === 1 && (n.event === "opened" || n.event === "escalated")) {
        document.getElementById("banner-text").textContent = `${n.kind.replaceAll("_", " ")} (${n.alarm_id})`;
        banner.hidden = false;
        document.getElementById("alert-sound").play().catch(() => {});
      }
    });
    const seen = () => { banner.hidden = true; };
    document.getElementById("banner-seen").addEventListener("click", seen);
    setInterval(refresh, 5000);  // ages move on, and a missed event heals within seconds
    times(document);
    table.addEventListener("focusin", (e) => { focused = e.target.closest("tr")?.dataset.alarmId || focused; });
    document.addEventListener("keydown", (e) => {
      if (e.target.matches("input, textarea")) return;
      const rows = [...table.querySelectorAll("tr[data-alarm-id]")];
      const at = rows.findIndex((r) => r.dataset.alarmId === focused);
      if (e.key === "Escape") seen();
      else if (e.key === "j" || e.key === "ArrowDown") rows[Math.min(at + 1, rows.length - 1)]?.focus();
      else if (e.key === "k" || e.key === "ArrowUp") rows[Math.max(at - 1, 0)]?.focus();
      else if (e.key === "a" && at >= 0) { const b = rows[at].querySelector(".ack-button"); if (b) acknowledge(b); }
      else if (e.key === "Enter" && at >= 0) location.href = `/alarms/${encodeURIComponent(focused)}`;
      else return;
      seen();
      e.preventDefault();
    });
  }
  function alarm() {
    times(document);
    const id = document.querySelector("h1[data-alarm-id]").dataset.alarmId;
    live((n) => { if (n.alarm_id === id) location.reload(); });
    document.getElementById("resolve-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const note = document.getElementById("resolve-note").value;
      document.getElementById("outcome").textContent = await post(`/api/alarms/${encodeURIComponent(id)}/resolve`, { note });
    });
    const data = JSON.parse(document.getElementById("map-data").textContent);
    // A view first: circles in metres need the map's projection before they are added.
    const map = L.map("map", { attributionControl: false }).setView([52.37, 4.9], 12);
    const layers = [];
    const track = data.track.offender.map((p) => [p.lat, p.lon]);
    if (track.length) {
      layers.push(L.polyline(track, { color: "#b00" }));
      track.forEach((p, i) => layers.push(L.circleMarker(p, { radius: i === track.length - 1 ? 8 : 4, color: "#b00" })));
    }
    const victim = data.track.victim;
    if (victim) {
      layers.push(L.circleMarker([victim.lat, victim.lon], { radius: 8, color: "#06c" }));
      data.track.rings_m.forEach((r) => layers.push(L.circle([victim.lat, victim.lon], { radius: r, color: "#06c", fill: false, dashArray: "6" })));
    }
    data.zones.forEach((z) => {
      if (z.radius_m) layers.push(L.circle([z.lat, z.lon], { radius: z.radius_m, color: "#555", fill: false }));
      if (z.geometry) layers.push(L.geoJSON(z.geometry, { style: { color: "#555", fill: false } }));
    });
    layers.forEach((l) => l.addTo(map));
    const group = L.featureGroup(layers);
    if (layers.length) map.fitBounds(group.getBounds().pad(0.2));
  }
  times(document);
  return { board, alarm };
})();
