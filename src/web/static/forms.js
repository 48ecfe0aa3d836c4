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
  // The value as the server compares it (src/tenant/forms/answers.rs): typed text
  // trimmed; a number also NFKC-normalised (３ → 3), without commas or spaces, and
  // without its unit (「3人」 → 3).
  function compared(el) {
    var v = el.value.trim();
    var mode = el.getAttribute("inputmode");
    if (mode !== "numeric" && mode !== "decimal") { return v; }
    v = v.normalize("NFKC").replace(/[,\s]/g, "");
    var unit = el.parentNode && el.parentNode.querySelector(".unit");
    var u = unit ? unit.textContent.normalize("NFKC") : "";
    if (u !== "" && v.length > u.length && v.slice(-u.length) === u) { v = v.slice(0, -u.length); }
    return v;
  }
  // A field's values as the server compares them, and whether it is answered. A
  // 同意 box is "yes" ticked and "no" unticked (stored as 同意しない), answered only
  // ticked; a name or an address (inputs `<id>.family`, `<id>.postal`…) is answered
  // when any of its parts is filled in.
  function values(name) {
    var out = { vals: [], answered: false };
    Array.prototype.forEach.call(form.elements, function (el) {
      var part = el.name.indexOf(name + ".") === 0;
      if (el.name !== name && !part) { return; }
      // A question hidden by its own rule is no answer, whatever it still holds: the
      // server leaves it out, so a rule on it sees nothing (rules are applied in the
      // page's order, after the ones they depend on).
      if (el.closest && el.closest("[hidden]")) { return; }
      // A file input is answered by a file chosen, or by one attached before and
      // not being removed; its remove box is not an answer of its own.
      if (el.type === "file") {
        var remove = form.elements[name + ".remove"];
        var kept = el.hasAttribute("data-attached") && !(remove && remove.checked);
        out.answered = out.answered || el.files.length > 0 || kept;
        return;
      }
      // Nor is an e-mail address typed again to check it.
      if (el.name === name + ".remove" || el.name === name + ".confirm") { return; }
      if (el.hasAttribute("data-consent")) {
        out.vals.push(el.checked ? "yes" : "no");
        out.answered = out.answered || el.checked;
        return;
      }
      if (part) {
        out.answered = out.answered || compared(el) !== "";
        return;
      }
      if ((el.type === "radio" || el.type === "checkbox") && !el.checked) { return; }
      var v = (el.type === "radio" || el.type === "checkbox" || el.tagName === "SELECT") ? el.value : compared(el);
      if (v !== "") { out.vals.push(v); out.answered = true; }
    });
    return out;
  }
  function apply() {
    rules.forEach(function (box) {
      var have = values(box.getAttribute("data-show-field"));
      var op = box.getAttribute("data-show-op");
      var want = JSON.parse(box.getAttribute("data-show-values") || "[]");
      var show = op === "not_empty" ? have.answered : want.some(function (w) { return have.vals.indexOf(w) >= 0; });
      box.hidden = !show;
    });
  }
  form.addEventListener("change", apply);
  form.addEventListener("input", apply);
  apply();
})();

// Proof of work before the final submit, when the confirmation page asks for it:
// find the number n (0..maxnumber) with SHA-256(salt + n) = challenge, then send it.
document.addEventListener("submit", function (ev) {
  var form = ev.target;
  if (!form.hasAttribute || !form.hasAttribute("data-pow") || form.getAttribute("data-pow-done")) return;
  ev.preventDefault();
  var c = JSON.parse(form.getAttribute("data-pow"));
  var status = document.getElementById("pow-status");
  var button = form.querySelector("button[type=submit]");
  if (button) button.disabled = true;
  if (status) status.textContent = "確認しています… / Checking…";
  var enc = new TextEncoder();
  function hex(buf) {
    return Array.prototype.map.call(new Uint8Array(buf), function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }
  (async function () {
    for (var n = 0; n <= c.maxnumber; n++) {
      var h = hex(await crypto.subtle.digest("SHA-256", enc.encode(c.salt + n)));
      if (h === c.challenge) {
        form.querySelector("input[name=pow]").value = btoa(JSON.stringify({
          algorithm: c.algorithm, challenge: c.challenge, number: n, salt: c.salt, signature: c.signature
        }));
        form.setAttribute("data-pow-done", "1");
        if (status) status.textContent = "送信しています… / Sending…";
        form.submit();
        return;
      }
    }
    if (status) status.textContent = "確認できませんでした。ページを読み込み直してください。 / Could not check; reload the page.";
    if (button) button.disabled = false;
  })();
});

// A form that must go once (sending a mailed link, opening one): its button is
// disabled while the request is under way, so a double tap sends one.
document.addEventListener("submit", function (ev) {
  var form = ev.target;
  if (!form.hasAttribute || !form.hasAttribute("data-once") || form.hasAttribute("data-pow")) return;
  var button = form.querySelector("button[type=submit]");
  if (!button) return;
  if (button.getAttribute("aria-disabled") === "true") { ev.preventDefault(); return; }
  button.setAttribute("aria-disabled", "true");
});

// Back to a confirmation page the browser kept (iOS Safari does): its button was
// disabled and its solution used. Make it ready to check and send again.
window.addEventListener("pageshow", function (ev) {
  if (!ev.persisted) return;
  document.querySelectorAll("form[data-once] button[type=submit]").forEach(function (b) {
    b.removeAttribute("aria-disabled");
  });
  document.querySelectorAll("form[data-pow]").forEach(function (form) {
    form.removeAttribute("data-pow-done");
    var input = form.querySelector("input[name=pow]");
    if (input) input.value = "";
    var button = form.querySelector("button[type=submit]");
    if (button) button.disabled = false;
  });
});

// 郵便番号 → 住所: seven digits typed in an address's postal code fill its empty
// address line with the prefecture, city and town (Japan Post's data, from
// /postal/NNNNNNN), said aloud by the line under it; what the person typed there
// is never replaced. Without this script the address is typed as usual.
document.querySelectorAll("form.citizen-form input[name$='.postal']").forEach(function (postal) {
  var id = postal.name.slice(0, -".postal".length);
  var line = postal.form.elements[id + ".address1"];
  var said = document.getElementById("postal-" + id);
  if (!line || !said) return;
  // `asked`: the code whose answer is awaited or shown ("" when none is, so an answer
  // for a code no longer in the box is dropped, and a failed one is asked again).
  var asked = "", filled = "";
  function look() {
    // As the server reads it (src/ja.rs postal_digits): NFKC, 〒 hyphens and spaces dropped.
    var d = postal.value.normalize("NFKC").replace(/[-\s〒‐ー−]/g, "");
    if (!/^[0-9]{7}$/.test(d)) {
      // What was said of the code before no longer holds.
      if (asked !== "") { asked = ""; said.textContent = ""; }
      return;
    }
    if (d === asked) return;
    asked = d;
    fetch("/postal/" + d, { credentials: "omit" })
      .then(function (r) {
        if (r.status === 404) return null;
        if (!r.ok) throw new Error(r.status);
        return r.json();
      })
      .then(function (p) {
        if (asked !== d) return;
        if (!p) {
          said.textContent = "郵便番号 " + d + " の住所は見つかりませんでした。番号をご確認のうえ、住所を入力してください。";
          return;
        }
        var place = p.prefecture + p.city + p.town;
        if (line.value.trim() === "" || line.value === filled) {
          line.value = place;
          filled = place;
          said.textContent = "住所に「" + place + "」を入れました。続けて番地を入力してください。";
        } else if (line.value.indexOf(place) !== 0) {
          said.textContent = "郵便番号 " + d + " の住所は「" + place + "」です。";
        } else {
          said.textContent = "";
        }
      })
      .catch(function () { if (asked === d) asked = ""; });
  }
  postal.addEventListener("input", look);
  postal.addEventListener("change", look);
});

// 添付ファイル: a file larger than its field takes is said at once and not sent (the
// server refuses it too, but only after the whole file has travelled).
(function () {
  var inputs = document.querySelectorAll("input[type=file][data-max-bytes]");
  Array.prototype.forEach.call(inputs, function (input) {
    input.addEventListener("change", function () {
      var max = Number(input.getAttribute("data-max-bytes"));
      var warning = document.getElementById("warning-" + input.name);
      var file = input.files && input.files[0];
      var tooBig = Boolean(file) && max > 0 && file.size > max;
      if (warning) {
        warning.textContent = tooBig ? "選んだファイルは大きすぎるため、添付されません（" + Math.floor(max / 1048576) + "MBまで）。小さいファイルを選んでください。 The file is too large." : "";
      }
      if (tooBig) { input.value = ""; }
    });
  });
})();
