// Admin screens: ask before destructive actions. Without JavaScript the actions
// simply happen; everything works either way.
"use strict";
// A bulk status change that mails applicants says to how many before it goes.
document.addEventListener("click", function (ev) {
  var button = ev.target.closest("button[data-confirm-notify]");
  var notify = button && button.form && button.form.querySelector("#b-notify");
  if (!notify || !notify.checked) { return; }
  var n = button.form.querySelectorAll("input[name=ids]:checked").length;
  if (!window.confirm("選択した" + n + "件の申請者（メールアドレスの回答がある方）に、メールで知らせます。よろしいですか？")) {
    ev.preventDefault();
  }
});
document.addEventListener("click", function (ev) {
  var el = ev.target.closest("[data-confirm]");
  if (el && !window.confirm(el.getAttribute("data-confirm"))) {
    ev.preventDefault();
  }
});
