// Keyboard shortcuts for the review queue: a progressive enhancement. Every action is a
// plain form that works without this file.
(function () {
  "use strict";
  document.documentElement.classList.add("js");
  function items() { return Array.prototype.slice.call(document.querySelectorAll(".queue .item")); }
  function current() { return document.querySelector(".queue .item.selected"); }
  function select(el) {
    var old = current();
    if (old) { old.classList.remove("selected"); }
    if (!el) { return; }
    el.classList.add("selected");
    el.focus({preventScroll: true});
    el.scrollIntoView({block: "nearest"});
  }
  function move(step) {
    var all = items();
    if (!all.length) { return; }
    var i = all.indexOf(current());
    select(all[Math.max(0, Math.min(all.length - 1, i < 0 ? 0 : i + step))]);
  }
  function remember(el) {
    try { sessionStorage.setItem("retainer-pos", String(items().indexOf(el))); } catch (err) { /* private mode */ }
  }
  function submit(el, action) {
    remember(el);
    var form = el.querySelector("form.review");
    var button = form && form.querySelector('button[name="action"][value="' + action + '"]');
    if (button) { form.requestSubmit(button); }
  }
  function typing(target) {
    var tag = target && target.tagName;
    return tag === "TEXTAREA" || tag === "SELECT" ||
      (tag === "INPUT" && !/^(checkbox|radio|button|submit)$/.test(target.type));
  }
  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) { return; }
    if (typing(e.target)) {
      if (e.key === "Escape") { e.target.blur(); var it = e.target.closest(".item"); if (it) { select(it); } }
      return;
    }
    if (!items().length) { return; }
    var tag = e.target && e.target.tagName;
    if ((e.key === "Enter" || e.key === " ") && (tag === "BUTTON" || tag === "A" || tag === "INPUT")) {
      return; // a focused control keeps its own Enter
    }
    var el = current();
    switch (e.key) {
      case "j": move(1); break;
      case "k": move(-1); break;
      case "a": if (el) { submit(el, "approve"); } break;
      case "c": if (el) { submit(el, "changes"); } break;
      case "f": if (el) { e.preventDefault(); el.querySelector("textarea").focus(); } break;
      case "x": if (el) { var box = el.querySelector(".pick input"); box.checked = !box.checked; } break;
      case "o": case "Enter": if (el) { el.querySelector("a.open").click(); } break;
      case "1": case "2": case "3": case "4": case "5":
        if (el) { var r = el.querySelector('input[name="rating"][value="' + e.key + '"]'); if (r) { r.checked = true; } }
        break;
      default: return;
    }
    e.preventDefault();
  });
  document.addEventListener("click", function (e) {
    var item = e.target.closest && e.target.closest(".queue .item");
    if (item) { select(item); }
    if (e.target.matches && e.target.matches("[data-tick-all]")) {
      var boxes = document.querySelectorAll(".queue .pick input");
      var all = Array.prototype.every.call(boxes, function (b) { return b.checked; });
      Array.prototype.forEach.call(boxes, function (b) { b.checked = !all; });
    }
  });
  document.addEventListener("submit", function (e) {
    var item = e.target.closest && e.target.closest(".queue .item");
    if (item) { remember(item); }
  });
  document.addEventListener("DOMContentLoaded", function () {
    // after a review the page reloads: carry on where the reviewed item was
    var all = items(), pos = 0;
    try {
      pos = parseInt(sessionStorage.getItem("retainer-pos") || "0", 10) || 0;
      sessionStorage.removeItem("retainer-pos");
    } catch (err) { pos = 0; }
    if (all.length) {
      select(all[Math.min(pos, all.length - 1)]);
      if (pos === 0) { window.scrollTo(0, 0); }
    }
  });
}());
