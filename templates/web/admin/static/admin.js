// The dashboard's only script: the editor's live preview and a campaign page's progress.
// No libraries; every request carries the session's CSRF token in X-CSRF-Token.
(function () {
  "use strict";
  var meta = document.querySelector('meta[name="csrf-token"]');
  var csrf = meta ? meta.content : "";

  // --- forms that ask first (no inline handlers: the page's policy allows this script only)
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
    });
  });

  // --- editor: re-render after a pause in typing; a late answer never overwrites a newer one
  var source = document.getElementById("source");
  var frame = document.getElementById("preview");
  var status = document.getElementById("preview-status");
  if (source && frame && status) {
    var timer = null, seq = 0;
    var show = function (text, cls) { status.textContent = text; status.className = cls; };
    var refresh = function () {
      var mine = ++seq;
      show("Rendering…", "muted");
      fetch("/admin/preview", {
        method: "POST", credentials: "same-origin",
        headers: {"Content-Type": "application/json", "Accept": "application/json", "X-CSRF-Token": csrf},
        body: JSON.stringify({source: source.value})
      }).then(function (r) {
        return r.json().then(function (data) { return {ok: r.ok, status: r.status, data: data}; });
      }).then(function (res) {
        if (mine !== seq) return;
        if (res.ok) {
          frame.srcdoc = res.data.html;
          frame.setAttribute("data-subject", res.data.subject);
          show(res.data.warnings.length ? "Warnings: " + res.data.warnings.join("; ") : "Preview up to date", "muted");
        } else {
          show(res.data.detail || ("Error " + res.status), "error");
        }
      }).catch(function (err) { if (mine === seq) show("Preview failed: " + err, "error"); });
    };
    source.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(refresh, 400); });
    if (source.value.trim()) refresh();
    document.querySelectorAll("[data-width]").forEach(function (button) {
      button.addEventListener("click", function () {
        frame.style.width = button.getAttribute("data-width") + "px";
        document.querySelectorAll("[data-width]").forEach(function (b) {
          b.setAttribute("aria-pressed", String(b === button));
        });
      });
    });
  }

  // --- campaign page: poll the numbers while it is sending
  var live = document.querySelector("[data-stats-url]");
  if (live) {
    var moving = ["sending", "scheduled"];
    var poll = function () {
      fetch(live.getAttribute("data-stats-url"), {credentials: "same-origin", headers: {"Accept": "application/json"}})
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (s) {
          if (!s) return;
          live.querySelectorAll("[data-stat]").forEach(function (el) {
            var v = s[el.getAttribute("data-stat")];
            el.textContent = typeof v === "number" ? Math.round(v) : (v || "");
          });
          var bar = live.querySelector("[data-stat-progress]");
          if (bar) bar.value = s.progress;
          var state = live.querySelector('[data-stat="status"]');
          if (state) state.className = "state " + s.status;
          if (moving.indexOf(s.status) >= 0) setTimeout(poll, 2000);
        });
    };
    if (moving.indexOf(live.getAttribute("data-status")) >= 0) setTimeout(poll, 2000);
  }
})();
