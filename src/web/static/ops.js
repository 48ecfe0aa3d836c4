// Operator console: signs a prepared document with the operator's Ed25519 key file
// inside the browser (WebCrypto); the key never leaves this computer. Also asks
// before destructive actions.
"use strict";
document.addEventListener("click", function (ev) {
  var el = ev.target.closest("[data-confirm]");
  if (el && !window.confirm(el.getAttribute("data-confirm"))) {
    ev.preventDefault();
  }
});

function b64decode(s) {
  var bin = atob(s.trim());
  var out = new Uint8Array(bin.length);
  for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function b64encode(bytes) {
  var bin = "";
  var a = new Uint8Array(bytes);
  for (var i = 0; i < a.length; i++) bin += String.fromCharCode(a[i]);
  return btoa(bin);
}

// PKCS #8 wrapping of a raw 32-byte Ed25519 seed (RFC 8410).
var PKCS8_PREFIX = [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

document.addEventListener("DOMContentLoaded", function () {
  var form = document.getElementById("sign-form");
  if (!form) return;
  var status = document.getElementById("sign-status");
  var done = false;
  form.addEventListener("submit", function (ev) {
    if (done) return;
    ev.preventDefault();
    var file = document.getElementById("keyfile").files[0];
    if (!file) {
      status.textContent = "鍵ファイルを選んでください / Choose your key file";
      return;
    }
    if (!window.crypto || !window.crypto.subtle) {
      status.textContent = "このブラウザでは署名できません（HTTPS または localhost が必要です） / This browser cannot sign here";
      return;
    }
    file.text().then(function (text) {
      var seed = b64decode(text);
      if (seed.length !== 32) throw new Error("鍵ファイルの形式が違います / not a key file");
      var der = new Uint8Array(PKCS8_PREFIX.length + 32);
      der.set(PKCS8_PREFIX, 0);
      der.set(seed, PKCS8_PREFIX.length);
      return crypto.subtle.importKey("pkcs8", der, { name: "Ed25519" }, false, ["sign"]);
    }).then(function (key) {
      return crypto.subtle.sign({ name: "Ed25519" }, key, b64decode(form.getAttribute("data-message")));
    }).then(function (sig) {
      document.getElementById("signature").value = b64encode(sig);
      status.textContent = "署名しました。送信しています… / Signed, submitting…";
      done = true;
      form.submit();
    }).catch(function (e) {
      status.textContent = "署名できませんでした / Could not sign: " + e.message;
    });
  });
});

// The erasure certificate's print button.
document.addEventListener("click", function (ev) {
  if (ev.target.closest("[data-print]")) window.print();
});
