// Loom web UI: the one live connection per page and the dialogs. No framework; htmx does the
// fragment re-fetches. Loaded as a file (the CSP allows no inline script).
(function () {
  "use strict";
  var body = document.body;
  var badge = document.getElementById("live-badge");
  var toggle = document.getElementById("live-toggle");
  var source = body.getAttribute("data-live");
  var es = null;
  var last = null; // the last SSE id (a resume token): sent as `after` when reconnecting
  var backoff = 1000;
  var userPaused = false;
  var pending = false;
  var userPausedByDrag = false;

  function dialogOpen() {
    return document.querySelector("dialog[open]") !== null;
  }
  function paused() {
    // A selection in the bulk list would be lost by a re-render: wait until it is used or cleared.
    return userPaused || userPausedByDrag || dialogOpen() || document.querySelector("input[name=ids]:checked") !== null;
  }
  function setBadge(state) {
    if (!badge) return;
    badge.setAttribute("data-state", state);
    badge.textContent = state === "live" ? "Live" : state === "paused" ? "Paused" : state === "reconnecting" ? "Reconnecting…" : "Connecting…";
  }
  // A re-render replaces the live region's elements: keep keyboard focus on "the same" control.
  var refocus = null;
  function focusKey() {
    var a = document.activeElement;
    if (!a || a === body) return null;
    if (a.id) return "#" + CSS.escape(a.id);
    var card = a.closest("[data-bead]");
    if (!card) return null;
    var sel = '[data-bead="' + CSS.escape(card.getAttribute("data-bead")) + '"] ';
    if (a.getAttribute("formaction")) return sel + '[formaction="' + CSS.escape(a.getAttribute("formaction")) + '"]';
    if (a.getAttribute("href")) return sel + 'a[href="' + CSS.escape(a.getAttribute("href")) + '"]';
    return null;
  }
  body.addEventListener("htmx:afterSettle", function () {
    if (!refocus) return;
    var el = document.querySelector(refocus);
    refocus = null;
    if (el && document.activeElement !== el) el.focus();
  });
  function refresh() {
    pending = false;
    refocus = focusKey();
    if (window.htmx) window.htmx.trigger(body, "loom:changed");
  }
  function connect() {
    if (!source || !window.EventSource) return;
    var url = source;
    if (last !== null) url += (url.indexOf("?") < 0 ? "?" : "&") + "after=" + encodeURIComponent(last);
    es = new EventSource(url);
    es.addEventListener("open", function () {
      backoff = 1000;
      setBadge(paused() ? "paused" : "live");
    });
    es.addEventListener("changed", function (e) {
      if (e.lastEventId) last = e.lastEventId;
      if (paused()) {
        pending = true;
        setBadge("paused");
      } else {
        refresh();
      }
    });
    es.addEventListener("error", function () {
      // Reconnect ourselves, with backoff (1 s doubling to 30 s) and the last id as `after`.
      es.close();
      setBadge("reconnecting");
      var wait = backoff + Math.floor(Math.random() * 250);
      backoff = Math.min(backoff * 2, 30000);
      window.setTimeout(connect, wait);
    });
  }
  function resumeIfIdle() {
    if (!paused()) {
      setBadge(es && es.readyState === 1 ? "live" : "connecting");
      if (pending) refresh();
    }
  }
  if (toggle) {
    toggle.addEventListener("click", function () {
      userPaused = !userPaused;
      toggle.setAttribute("aria-pressed", userPaused ? "true" : "false");
      toggle.textContent = userPaused ? "Resume live updates" : "Pause live updates";
      if (userPaused) setBadge("paused");
      else resumeIfIdle();
    });
  }
  // Dialogs: buttons with data-open="<dialog id>" open one; updates pause while it is open.
  document.addEventListener("click", function (e) {
    var t = e.target.closest ? e.target.closest("[data-open],[data-close]") : null;
    if (!t) return;
    if (t.hasAttribute("data-open")) {
      var d = document.getElementById(t.getAttribute("data-open"));
      if (d && d.showModal) {
        d.showModal();
        setBadge("paused");
        var first = d.querySelector("input:not([type=hidden]),select,textarea");
        if (first) first.focus();
      }
    } else {
      var dlg = t.closest("dialog");
      if (dlg) dlg.close();
    }
  });
  document.querySelectorAll("dialog").forEach(function (d) {
    d.addEventListener("close", resumeIfIdle);
  });
  // Bulk list: "select all" checkbox.
  document.addEventListener("change", function (e) {
    if (e.target.id === "select-all") {
      document.querySelectorAll("input[name=ids]").forEach(function (c) {
        c.checked = e.target.checked;
      });
    }
    if (e.target.name === "ids" || e.target.id === "select-all") resumeIfIdle();
  });
  // Drag a card onto a column: does what that column's button on the card would (only a legal
  // transition has a button; a drop with none does nothing). Buttons stay for the keyboard.
  var dragging = null;
  var dropAction = { closed: ["close"], open: ["reopen", "redispatch"], ready: ["reopen", "redispatch"] };
  document.addEventListener("dragstart", function (e) {
    var card = e.target.closest && e.target.closest("li.card[draggable]");
    if (!card) return;
    dragging = card;
    userPausedByDrag = true;
    e.dataTransfer.effectAllowed = "move";
    e.dataTransfer.setData("text/plain", card.getAttribute("data-bead"));
  });
  document.addEventListener("dragend", function () {
    dragging = null;
    userPausedByDrag = false;
    resumeIfIdle();
  });
  function dropButton(column) {
    if (!dragging || !column) return null;
    var actions = dropAction[column.getAttribute("data-column")] || [];
    for (var i = 0; i < actions.length; i++) {
      var b = dragging.querySelector('button[formaction$="/' + actions[i] + '"]');
      if (b) return b;
    }
    return null;
  }
  document.addEventListener("dragover", function (e) {
    if (dropButton(e.target.closest && e.target.closest("section.column"))) e.preventDefault();
  });
  document.addEventListener("drop", function (e) {
    var b = dropButton(e.target.closest && e.target.closest("section.column"));
    if (b) {
      e.preventDefault();
      b.click();
    }
  });
  setBadge("connecting");
  connect();
})();
