// Cascade console: live updates and as-you-type validation. Hand-written, no dependencies.
"use strict";

// Live updates: the server sends `applied` whenever the replica applies new entries; re-fetch this page and
// swap its #live region (one fetch at a time; a change during a fetch triggers one more).
(function live() {
  const region = document.getElementById("live");
  const dot = document.getElementById("live-status");
  if (!region || !window.EventSource) return;
  let busy = false, again = false, seen = null;
  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const response = await fetch(location.href, { credentials: "same-origin", headers: { "x-cascade-live": "1" } });
      if (response.ok && !response.redirected) {
        const doc = new DOMParser().parseFromString(await response.text(), "text/html");
        const fresh = doc.getElementById("live");
        if (fresh && fresh.innerHTML !== region.innerHTML) region.innerHTML = fresh.innerHTML;
      }
    } catch (e) { /* the next event retries */ }
    busy = false;
    if (again) { again = false; refresh(); }
  }
  let source = null;
  function connect() {
    source = new EventSource("/events");
    source.addEventListener("open", () => dot && dot.classList.add("on"));
    source.addEventListener("error", () => dot && dot.classList.remove("on"));
    source.addEventListener("applied", (e) => {
      if (seen !== null && e.data !== seen) refresh();
      seen = e.data;
    });
  }
  connect();
  // A page kept in the back/forward cache must not keep its stream open: the browser allows only a few
  // connections per host (6 in Chromium), and cached pages' streams would starve the live page's requests.
  window.addEventListener("pagehide", () => { source.close(); dot && dot.classList.remove("on"); });
  window.addEventListener("pageshow", (e) => {
    if (!e.persisted) return;
    seen = null;
    connect();
    refresh();
  });
})();

// Validation as you type, with the server's own messages (GET /validate uses the same validators as the API).
(function validate() {
  for (const input of document.querySelectorAll("input[data-validate]")) {
    const msg = document.getElementById(input.id + "-msg");
    let timer = null, seq = 0;
    input.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(async () => {
        const mine = ++seq;
        const url = "/validate?field=" + encodeURIComponent(input.dataset.validate) + "&value=" + encodeURIComponent(input.value);
        try {
          const answer = await (await fetch(url, { credentials: "same-origin" })).json();
          if (mine !== seq) return;
          input.setCustomValidity(answer.ok ? "" : answer.message);
          input.classList.toggle("invalid", !answer.ok);
          if (msg) msg.textContent = answer.message;
        } catch (e) { /* the server checks again on submit */ }
      }, 120);
    });
  }
})();

// Bake countdowns (`data-countdown` seconds when the page was rendered) tick down between live updates; a
// live update replaces the element with the server's fresh figure.
(function countdowns() {
  setInterval(() => {
    for (const el of document.querySelectorAll("[data-countdown]")) {
      if (el.startedAt === undefined) { el.startedAt = Date.now(); el.startLeft = parseInt(el.dataset.countdown, 10) || 0; }
      const left = Math.max(0, el.startLeft - Math.floor((Date.now() - el.startedAt) / 1000));
      el.textContent = left + " s left";
    }
  }, 1000);
})();
