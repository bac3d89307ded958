// Refreshes the rollout page's live panel in place every data-refresh seconds.
// Skipped while the operator is typing in it or the tab is hidden, so a refresh
// never eats a half-filled form. Without JavaScript the page works the same,
// it just does not refresh itself.
(function () {
  "use strict";
  var panel = document.getElementById("live");
  if (!panel) { return; }
  var seconds = parseInt(panel.getAttribute("data-refresh"), 10);
  if (!(seconds > 0)) { return; }

  function busy() {
    if (panel.contains(document.activeElement) && document.activeElement !== document.body) {
      var tag = document.activeElement.tagName;
      if (tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT") { return true; }
    }
    var fields = panel.querySelectorAll("input:not([type=hidden]), textarea");
    for (var i = 0; i < fields.length; i++) {
      if (fields[i].value !== fields[i].defaultValue) { return true; }
    }
    return false;
  }

  function refresh() {
    if (document.hidden || busy()) { return; }
    fetch(panel.getAttribute("data-src"), {credentials: "same-origin", headers: {"Accept": "text/html"}})
      .then(function (response) {
        if (!response.ok || response.redirected) {
          // Signed out or the rollout vanished: let the full page say so.
          window.location.reload();
          return null;
        }
        return response.text();
      })
      .then(function (html) {
        if (html !== null && !busy()) {
          var opened = [].map.call(panel.querySelectorAll("details[open][id]"), function (d) { return d.id; });
          panel.innerHTML = html;
          opened.forEach(function (id) {
            var details = document.getElementById(id);
            if (details) { details.open = true; }
          });
          panel.classList.remove("stale");
          panel.setAttribute("data-refreshed", String(Date.now()));
        }
      })
      .catch(function () { panel.classList.add("stale"); });
  }

  window.setInterval(refresh, seconds * 1000);
})();
