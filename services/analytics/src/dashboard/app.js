// The picker's empty fields, and live refresh: reloads the figures of the open page every data-refresh seconds
// from the same URL (same origin, no other network), keeping the scroll position.
(function () {
  // The picker leaves empty fields out of the URL.
  var picker = document.querySelector("form.picker");
  if (picker) {
    picker.addEventListener("submit", function () {
      Array.prototype.forEach.call(picker.elements, function (e) {
        if (e.name && !e.value) e.disabled = true;
      });
    });
  }
  var live = document.getElementById("live");
  if (!live) return;
  var secs = parseInt(live.getAttribute("data-refresh"), 10);
  if (!(secs > 0)) return;
  setInterval(function () {
    if (document.hidden) return;
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) {
        if (r.redirected || !r.ok) { window.location.reload(); return null; }
        return r.text();
      })
      .then(function (text) {
        if (!text) return;
        var doc = new DOMParser().parseFromString(text, "text/html");
        var fresh = doc.getElementById("content");
        var here = document.getElementById("content");
        if (fresh && here) {
          var focused = document.activeElement && here.contains(document.activeElement);
          if (!focused) here.innerHTML = fresh.innerHTML;
        }
      })
      .catch(function () {});
  }, secs * 1000);
})();
