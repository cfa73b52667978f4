// The live progress view: poll the edition's progress.json every second and update the
// figures and the bar in place; stop once the send is over (sent or cancelled).
(function () {
  "use strict";
  var box = document.getElementById("progress");
  if (!box) { return; }
  var url = box.getAttribute("data-url");
  var number = new Intl.NumberFormat("en");

  function duration(seconds) {
    if (seconds === null || seconds === undefined) { return "–"; }
    seconds = Math.max(0, Math.round(seconds));
    if (seconds < 60) { return seconds + " s"; }
    if (seconds < 3600) { return Math.floor(seconds / 60) + " min " + (seconds % 60) + " s"; }
    return Math.floor(seconds / 3600) + " h " + Math.floor(seconds % 3600 / 60) + " min";
  }

  function set(name, text) {
    document.querySelectorAll('[data-field="' + name + '"]').forEach(function (el) {
      el.textContent = text;
    });
  }

  function show(p) {
    set("state", p.state);
    document.querySelectorAll('[data-field="state"]').forEach(function (el) {
      el.className = "state " + p.state;
    });
    set("percent", p.percent);
    set("done", number.format(p.done));
    set("audience", number.format(p.audience));
    set("remaining", number.format(p.remaining));
    set("rate_per_second", p.rate_per_second);
    set("eta", duration(p.eta_seconds));
    set("reason", p.reason || "");
    // The server writes the time (the association's zone, 24 h): the browser's clock
    // would follow the browser's locale.
    set("updated", "Last update " + p.as_of + ".");
    Object.keys(p.counts).forEach(function (key) {
      var el = box.querySelector('[data-count="' + key + '"]');
      if (el) { el.textContent = number.format(p.counts[key]); }
    });
    var bar = box.querySelector("[data-bar]");
    bar.style.width = p.percent + "%";
    bar.parentNode.setAttribute("aria-valuenow", p.percent);
    box.querySelectorAll("[data-when]").forEach(function (el) {
      el.hidden = el.getAttribute("data-when") !== p.state;
    });
    return p.state === "sent" || p.state === "cancelled";
  }

  function poll() {
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (r.status === 401) { window.location.reload(); throw new Error("logged out"); }
        return r.json();
      })
      .then(function (p) { if (!show(p)) { setTimeout(poll, 1000); } })
      .catch(function () { setTimeout(poll, 3000); });
  }
  poll();
}());
