// Keyboard shortcuts for the annotation form (no build step, no dependencies).
//   1 / 2 / 3     preference: A / B / tie (when not typing in a text field)
//   digits        rating: score the next unrated dimension
//   Ctrl+Enter    submit (also from inside a text field; Cmd+Enter on macOS)
// It also records the time spent on the item in the hidden "seconds" field.
(function () {
  "use strict";
  var form = document.getElementById("annotate-form");
  if (!form) return;
  var started = Date.now();
  var task = form.getAttribute("data-task");

  function typing(el) {
    return el && (el.tagName === "TEXTAREA" || (el.tagName === "INPUT" && el.type !== "radio" && el.type !== "checkbox")
      || el.isContentEditable);
  }

  function submit() {
    var seconds = document.getElementById("seconds");
    if (seconds) seconds.value = ((Date.now() - started) / 1000).toFixed(1);
    if (form.reportValidity && !form.reportValidity()) return;
    if (form.requestSubmit) form.requestSubmit(); else form.submit();
  }

  form.addEventListener("submit", function () {
    var seconds = document.getElementById("seconds");
    if (seconds && !seconds.value) seconds.value = ((Date.now() - started) / 1000).toFixed(1);
  });

  function markCurrentScale() {
    var sets = form.querySelectorAll("fieldset.scale");
    var marked = false;
    sets.forEach(function (fs) {
      fs.classList.remove("current");
      if (!marked && !fs.querySelector("input:checked")) { fs.classList.add("current"); marked = true; }
    });
  }

  document.addEventListener("keydown", function (e) {
    if ((e.ctrlKey || e.metaKey) && e.key === "Enter") { e.preventDefault(); submit(); return; }
    if (e.ctrlKey || e.metaKey || e.altKey || typing(e.target)) return;
    if (task === "preference") {
      var radio = form.querySelector('input[name="choice"][data-key="' + e.key + '"]');
      if (radio) { radio.checked = true; radio.focus(); e.preventDefault(); }
    } else if (task === "rating" && /^[0-9]$/.test(e.key)) {
      var current = form.querySelector("fieldset.scale.current") || form.querySelector("fieldset.scale");
      if (!current) return;
      var input = current.querySelector('input[value="' + e.key + '"]');
      if (input) { input.checked = true; e.preventDefault(); markCurrentScale(); }
    }
  });
  form.addEventListener("change", markCurrentScale);
  markCurrentScale();
  var first = form.querySelector("textarea");
  if (first && (task === "sft" || task === "critique")) first.focus();
})();
