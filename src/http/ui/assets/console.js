// The operator console's only script (the pages work without it): pages that show something
// still moving (the dashboard, a job that is not final) reload themselves every few seconds,
// unless the operator is typing in a form; and buttons marked data-confirm ask first.
(function () {
  "use strict";
  var refresh = parseInt(document.body.getAttribute("data-refresh") || "0", 10);
  if (refresh > 0) {
    var typing = false;
    document.addEventListener("input", function () { typing = true; });
    setTimeout(function () { if (!typing) { window.location.reload(); } }, refresh * 1000);
  }
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (e) {
      if (!window.confirm(form.getAttribute("data-confirm"))) { e.preventDefault(); }
    });
  });
})();
