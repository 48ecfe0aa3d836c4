// Citizen forms: hide fields whose show/hide rule depends on an answer on the same
// page, as the person answers. The server applies the same rules when the page is
// sent, so the form works without this script.
"use strict";
(function () {
  var form = document.querySelector("form.citizen-form");
  if (!form) { return; }
  var summary = document.getElementById("error-summary");
  if (summary) { summary.focus(); }
  var rules = Array.prototype.slice.call(form.querySelectorAll("[data-show-field]"));
  if (rules.length === 0) { return; }
  function values(name) {
    var out = [];
    Array.prototype.forEach.call(form.elements, function (el) {
      if (el.name !== name) { return; }
      if ((el.type === "radio" || el.type === "checkbox") && !el.checked) { return; }
      if (el.value !== "") { out.push(el.type === "checkbox" && el.value === "yes" ? "yes" : el.value); }
    });
    return out;
  }
  function apply() {
    rules.forEach(function (box) {
      var have = values(box.getAttribute("data-show-field"));
      var op = box.getAttribute("data-show-op");
      var want = JSON.parse(box.getAttribute("data-show-values") || "[]");
      var show = op === "not_empty" ? have.length > 0 : want.some(function (w) { return have.indexOf(w) >= 0; });
      box.hidden = !show;
    });
  }
  form.addEventListener("change", apply);
  form.addEventListener("input", apply);
  apply();
})();
