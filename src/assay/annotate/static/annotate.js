// Keyboard shortcuts for the annotation form (no build step, no dependencies).
//   1 / 2 / 3     preference: A / B / tie (when not typing in a text field)
//   digits        rating: score the next unrated dimension
//   Ctrl+Enter    submit (also from inside a text field; Cmd+Enter on macOS)
//   Space         clip rating: play / pause the clip
// It also records the time spent on the item in the hidden "seconds" field, and for image edits lets the annotator
// paint a mask over the before image (a canvas the size of the image), sent as a PNG file with the form.
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
    } else if (task === "clip_rating" && e.key === " " && document.getElementById("clip")) {
      var clip = document.getElementById("clip");
      if (e.target !== clip) { if (clip.paused) clip.play(); else clip.pause(); e.preventDefault(); }
    } else if ((task === "rating" || task === "clip_rating") && /^[0-9]$/.test(e.key)) {
      var current = form.querySelector("fieldset.scale.current") || form.querySelector("fieldset.scale");
      if (!current) return;
      var input = current.querySelector('input[value="' + e.key + '"]');
      if (input) { input.checked = true; e.preventDefault(); markCurrentScale(); }
    }
  });
  form.addEventListener("change", markCurrentScale);
  if (task === "image_edit") setUpMask();

  // -- image edit: paint a mask over the before image --------------------------------------------------------------
  function setUpMask() {
    var canvas = document.getElementById("mask-canvas");
    var fileInput = document.getElementById("mask-file");
    if (!canvas || !fileInput) return;
    var ctx = canvas.getContext("2d");
    var size = document.getElementById("brush-size");
    var status = document.getElementById("mask-status");
    var painted = false, drawing = false, last = null, attached = false;

    function point(e) {  // pointer position in the image's own pixels (the canvas is scaled by CSS)
      var r = canvas.getBoundingClientRect();
      return { x: (e.clientX - r.left) * canvas.width / r.width, y: (e.clientY - r.top) * canvas.height / r.height };
    }
    function brush() {
      var r = canvas.getBoundingClientRect();
      return Number(size ? size.value : 24) * canvas.width / Math.max(r.width, 1);
    }
    function stroke(from, to) {
      ctx.strokeStyle = ctx.fillStyle = "rgba(255, 0, 64, 1)";
      ctx.lineWidth = brush(); ctx.lineCap = ctx.lineJoin = "round";
      ctx.beginPath(); ctx.moveTo(from.x, from.y); ctx.lineTo(to.x, to.y); ctx.stroke();
      painted = true; attached = false;
      if (status) status.textContent = "mask painted";
    }
    canvas.addEventListener("pointerdown", function (e) {
      drawing = true; last = point(e); stroke(last, last);
      if (canvas.setPointerCapture) canvas.setPointerCapture(e.pointerId);
      e.preventDefault();
    });
    canvas.addEventListener("pointermove", function (e) {
      if (!drawing) return;
      var p = point(e); stroke(last, p); last = p;
    });
    ["pointerup", "pointercancel", "pointerleave"].forEach(function (name) {
      canvas.addEventListener(name, function () { drawing = false; });
    });
    var clear = document.getElementById("mask-clear");
    if (clear) clear.addEventListener("click", function () {
      ctx.clearRect(0, 0, canvas.width, canvas.height);
      painted = false; attached = false; fileInput.value = "";
      if (status) status.textContent = "no mask";
    });
    // The canvas becomes a PNG file in the form's "mask" field just before it is sent.
    form.addEventListener("submit", function (e) {
      if (!painted || attached) return;
      e.preventDefault();
      canvas.toBlob(function (blob) {
        var dt = new DataTransfer();
        dt.items.add(new File([blob], "mask.png", { type: "image/png" }));
        fileInput.files = dt.files;
        attached = true;
        HTMLFormElement.prototype.submit.call(form);  // form.submit is shadowed by the button with id "submit"
      }, "image/png");
    });
  }
  markCurrentScale();
  var first = form.querySelector("textarea");
  if (first && (task === "sft" || task === "critique")) first.focus();
})();
