// The supervisors' dashboard, live: one WebSocket, no polling, no build step.
// The server sends each section's HTML (already escaped there); this script puts it in place,
// keeps wait times counting between messages, and reconnects when the socket drops.
(() => {
  "use strict";
  const LOGIN_GONE = 4401;
  const MAX_RETRY_MS = 30000;
  const status = document.getElementById("live-status");
  let offsetMs = 0;
  let retryMs = 1000;
  let updates = 0;

  function setLive(state, text) {
    document.body.dataset.live = state;
    status.textContent = text;
  }

  function section(name) {
    return document.querySelector(`[data-section="${name}"]`);
  }

  function setCall(callId, html) {
    const cards = section("calls").querySelector(".cards");
    const card = Array.from(cards.children).find((el) => el.dataset.call === callId);
    if (html === null) {
      if (card) card.remove();
      return;
    }
    const template = document.createElement("template");
    template.innerHTML = html;
    const fresh = template.content.firstElementChild;
    if (card) card.replaceWith(fresh);
    else cards.prepend(fresh);
  }

  function duration(seconds) {
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
    return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
  }

  function tick() {
    const now = Date.now() + offsetMs;
    for (const el of document.querySelectorAll("[data-since]")) {
      el.textContent = duration((now - Date.parse(el.dataset.since)) / 1000);
    }
  }

  function apply(msg) {
    offsetMs = Date.parse(msg.now) - Date.now();
    if (msg.type === "snapshot") {
      for (const [name, part] of Object.entries(msg.sections)) section(name).innerHTML = part.html;
    } else if (msg.type === "section") {
      section(msg.name).innerHTML = msg.html;
    } else if (msg.type === "call") {
      setCall(msg.call_id, msg.html);
    }
    updates += 1;
    document.body.dataset.updates = String(updates);
    tick();
  }

  function connect() {
    const url = new URL("/dashboard/ws", window.location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(url);
    let opened = false;
    socket.onopen = () => {
      opened = true;
      retryMs = 1000;
      setLive("open", "live");
    };
    socket.onmessage = (event) => apply(JSON.parse(event.data));
    socket.onclose = (event) => {
      if (event.code === LOGIN_GONE) {
        window.location.reload();
        return;
      }
      if (!opened) {
        // refused: if it is because the login is gone, the reload shows the login form
        fetch("/api/me", {credentials: "same-origin"})
          .then((answer) => { if (answer.status === 401) window.location.reload(); })
          .catch(() => {});
      }
      setLive("closed", `reconnecting in ${Math.round(retryMs / 1000)} s…`);
      window.setTimeout(connect, retryMs);
      retryMs = Math.min(retryMs * 2, MAX_RETRY_MS);
    };
  }

  connect();
  window.setInterval(tick, 1000);
})();
