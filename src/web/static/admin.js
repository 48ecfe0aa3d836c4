// Admin screens: ask before destructive actions. Without JavaScript the actions
// simply happen; everything works either way.
"use strict";
document.addEventListener("click", function (ev) {
  var el = ev.target.closest("[data-confirm]");
  if (el && !window.confirm(el.getAttribute("data-confirm"))) {
    ev.preventDefault();
  }
});
