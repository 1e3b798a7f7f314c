// The desk's only script: keeps an open queue current without a reload. The server sends
// a `queue` event over /desk/events whenever a case opens, moves or closes; the list and
// its counts are then fetched again as server-rendered (escaped) HTML and swapped in.
// Without this script the page still works: reload shows the same.
(function () {
  "use strict";
  var queue = document.getElementById("queue");
  if (!queue || !window.EventSource) {
    return;
  }
  var cursor = queue.getAttribute("data-cursor") || "";
  var busy = false;
  var again = false;

  function refresh() {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    fetch("/desk/queue/fragment" + window.location.search, {
      credentials: "same-origin",
      headers: { Accept: "text/html" },
    })
      .then(function (response) {
        if (response.redirected || response.status === 401 || response.status === 403) {
          // Signed out (expired or revoked session): the sign-in page says so.
          window.location.assign("/desk/sign-in");
          return null;
        }
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (html !== null) {
          queue.innerHTML = html;
          queue.setAttribute("data-refreshed", String(Date.now()));
        }
      })
      .finally(function () {
        busy = false;
        if (again) {
          again = false;
          refresh();
        }
      });
  }

  var source = new EventSource(
    queue.getAttribute("data-events") + "?cursor=" + encodeURIComponent(cursor)
  );
  source.addEventListener("queue", function (event) {
    if (event.data !== cursor) {
      cursor = event.data;
      refresh();
    }
  });
})();
