// The trajectory task: camera videos and action/state curves on one timeline (no build step, no dependencies).
// The timeline's cursor follows the first camera's time; every other camera follows it. Keys (when not typing):
//   Space          play / pause every camera
//   ← / →          one frame back / forward (Shift: 10 frames); Home / End: first / last frame
//   S / F          success / failure
//   [              a sub-task starts at the cursor
//   ]              it ends at the cursor: the line "START END LABEL" is added to the segments box (the label is the
//                  "Next label" box; when that is empty it takes the focus, and Enter there adds the segment)
//   I              edit the instruction
// Clicking or dragging on the curves moves the cursor (and the videos). The segments box is the answer: what the
// annotator types there is what is sent, and the bands on the timeline are drawn from it.
(function () {
  "use strict";
  var form = document.getElementById("annotate-form");
  var dataEl = document.getElementById("trajectory-data");
  if (!form || !dataEl) return;
  var data = JSON.parse(dataEl.textContent);
  var fps = data.fps, n = data.n_frames;
  var videos = Array.prototype.slice.call(document.querySelectorAll("video.camera"));
  var master = videos[0] || null;
  var canvas = document.getElementById("timeline");
  var ctx = canvas.getContext("2d");
  var frameOut = document.getElementById("frame"), timeOut = document.getElementById("time");
  var playBtn = document.getElementById("play"), pendingOut = document.getElementById("seg-pending");
  var box = document.getElementById("segments"), labelBox = document.getElementById("segment-label");
  var frame = 0, pendingStart = null, playing = false, timer = null, lastTick = 0;
  var COLOURS = ["#2c5fd4", "#d4572c", "#1e7b34", "#9b2cd4", "#c9a227", "#2cb1d4", "#d42c8a", "#6b6b6b"];
  var BANDS = ["rgba(44,95,212,.13)", "rgba(212,87,44,.13)", "rgba(30,123,52,.13)", "rgba(155,44,212,.13)"];
  var PAD = 6, GAP = 10;

  function startOf(v) { return Number(v.getAttribute("data-start")) || 0; }
  function clamp(k) { return Math.max(0, Math.min(n - 1, k)); }
  // frame k is shown from start + k/fps: seek to the middle of the frame so rounding never lands on its neighbour
  function timeOfFrame(v, k) { return startOf(v) + (k + 0.5) / fps; }
  function frameOfTime(v) { return clamp(Math.floor((v.currentTime - startOf(v)) * fps + 1e-6)); }

  // -- the curves ----------------------------------------------------------------------------------------------
  var groups = Object.keys(data.series).map(function (key) {  // one lane per series (action, state, ...)
    var s = data.series[key];
    var lo = Infinity, hi = -Infinity;
    s.values.forEach(function (dim) { dim.forEach(function (x) { if (x < lo) lo = x; if (x > hi) hi = x; }); });
    if (!(hi > lo)) { hi = lo + 1; lo = lo - 1; }
    return { key: key, names: s.names, values: s.values, lo: lo, hi: hi };
  });
  function xOf(k) { return PAD + (canvas.width - 2 * PAD) * (n > 1 ? k / (n - 1) : 0.5); }
  function laneTop(g) { return PAD + g * ((canvas.height - PAD) / Math.max(groups.length, 1)); }
  function laneHeight() { return (canvas.height - PAD) / Math.max(groups.length, 1) - GAP; }

  function parseSegments() {
    var out = [];
    box.value.split("\n").forEach(function (line) {
      var m = /^\s*(\d+)\s*[- ]\s*(\d+)\s+(.+?)\s*$/.exec(line);
      if (m) out.push({ start: Number(m[1]), end: Number(m[2]), label: m[3] });
    });
    return out;
  }

  function draw() {
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    parseSegments().forEach(function (s, i) {  // sub-task bands behind the curves
      var x0 = xOf(clamp(s.start)), x1 = xOf(clamp(s.end));
      ctx.fillStyle = BANDS[i % BANDS.length];
      ctx.fillRect(x0, 0, Math.max(x1 - x0, 2), canvas.height);
      ctx.fillStyle = "#1d2330"; ctx.font = "12px system-ui, sans-serif";
      ctx.fillText(s.label, x0 + 3, canvas.height - 4);
    });
    groups.forEach(function (g, gi) {
      var top = laneTop(gi), h = laneHeight();
      ctx.fillStyle = "#5b6475"; ctx.font = "11px system-ui, sans-serif";
      ctx.fillText(g.key, PAD + 2, top + 11);
      g.values.forEach(function (dim, d) {
        ctx.strokeStyle = COLOURS[d % COLOURS.length]; ctx.lineWidth = 1.2;
        ctx.beginPath();
        dim.forEach(function (x, k) {
          var y = top + h - (x - g.lo) / (g.hi - g.lo) * h;
          if (k === 0) ctx.moveTo(xOf(k), y); else ctx.lineTo(xOf(k), y);
        });
        ctx.stroke();
      });
    });
    if (pendingStart !== null) {
      ctx.fillStyle = "rgba(44,95,212,.25)";
      var a = xOf(Math.min(pendingStart, frame)), b = xOf(Math.max(pendingStart, frame));
      ctx.fillRect(a, 0, Math.max(b - a, 2), canvas.height);
    }
    ctx.strokeStyle = "#b3261e"; ctx.lineWidth = 2;  // the cursor
    ctx.beginPath(); ctx.moveTo(xOf(frame), 0); ctx.lineTo(xOf(frame), canvas.height); ctx.stroke();
  }

  function legend() {
    var el = document.getElementById("legend");
    if (!el) return;
    groups.forEach(function (g) {
      var row = document.createElement("div");
      row.textContent = g.key + ": ";
      g.names.forEach(function (name, d) {
        var sw = document.createElement("span");
        sw.className = "swatch"; sw.style.background = COLOURS[d % COLOURS.length];
        row.appendChild(sw);
        row.appendChild(document.createTextNode(name + " "));
      });
      el.appendChild(row);
    });
  }

  // -- the cursor and the videos -------------------------------------------------------------------------------
  function show(k) {
    frame = clamp(k);
    frameOut.textContent = String(frame);
    timeOut.textContent = (frame / fps).toFixed(2);
    if (pendingStart !== null) pendingOut.textContent = "sub-task from frame " + pendingStart + " to " + frame + " …";
    draw();
  }
  function seek(k) {
    pause();
    show(k);
    videos.forEach(function (v) { v.currentTime = timeOfFrame(v, frame); });
  }
  function follow() {  // while playing: the cursor follows the first camera, the others follow it
    if (!playing) return;
    if (master) {
      var k = frameOfTime(master);
      videos.slice(1).forEach(function (v) {
        var want = startOf(v) + (master.currentTime - startOf(master));
        if (Math.abs(v.currentTime - want) > 0.15) v.currentTime = want;
      });
      if (k !== frame) show(k);
      if (master.ended || k >= n - 1) { pause(); return; }
    } else {  // no camera: a clock drives the cursor
      var now = performance.now();
      var k2 = frame + Math.floor((now - lastTick) * fps / 1000);
      if (k2 !== frame) { lastTick = now; show(k2); }
      if (frame >= n - 1) { pause(); return; }
    }
    timer = requestAnimationFrame(follow);
  }
  function play() {
    if (frame >= n - 1) seek(0);
    playing = true; lastTick = performance.now();
    videos.forEach(function (v) { var p = v.play(); if (p && p.catch) p.catch(function () {}); });
    playBtn.firstChild.textContent = "Pause ";
    timer = requestAnimationFrame(follow);
  }
  function pause() {
    if (!playing) return;
    playing = false;
    if (timer) cancelAnimationFrame(timer);
    videos.forEach(function (v) { v.pause(); });
    if (master) {
      show(frameOfTime(master));
      videos.slice(1).forEach(function (v) { v.currentTime = timeOfFrame(v, frame); });
    }
    playBtn.firstChild.textContent = "Play ";
  }
  function toggle() { if (playing) pause(); else play(); }

  function frameAt(e) {
    var r = canvas.getBoundingClientRect();
    var x = (e.clientX - r.left) * canvas.width / r.width;
    return Math.round((x - PAD) / (canvas.width - 2 * PAD) * (n - 1));
  }
  var dragging = false;
  canvas.addEventListener("pointerdown", function (e) {
    dragging = true; seek(frameAt(e));
    if (canvas.setPointerCapture) canvas.setPointerCapture(e.pointerId);
    e.preventDefault();
  });
  canvas.addEventListener("pointermove", function (e) { if (dragging) seek(frameAt(e)); });
  ["pointerup", "pointercancel"].forEach(function (name) {
    canvas.addEventListener(name, function () { dragging = false; });
  });
  playBtn.addEventListener("click", toggle);

  // -- sub-tasks -----------------------------------------------------------------------------------------------
  function markStart() {
    pendingStart = frame;
    pendingOut.textContent = "sub-task from frame " + frame + " …";
    draw();
  }
  function addSegment() {
    if (pendingStart === null) { pendingOut.textContent = "press [ where the sub-task starts first"; return; }
    var label = labelBox.value.trim();
    if (!label) {
      pendingOut.textContent = "type the sub-task's label, then Enter";
      labelBox.focus();
      return;
    }
    var a = Math.min(pendingStart, frame), b = Math.max(pendingStart, frame);
    var text = box.value.replace(/\s+$/, "");
    box.value = (text ? text + "\n" : "") + a + " " + b + " " + label + "\n";
    pendingStart = null; labelBox.value = "";
    pendingOut.textContent = "added " + a + "–" + b + " " + label;
    if (document.activeElement === labelBox) labelBox.blur();
    draw();
  }
  document.getElementById("seg-start").addEventListener("click", markStart);
  document.getElementById("seg-end").addEventListener("click", addSegment);
  labelBox.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && !e.ctrlKey && !e.metaKey) { e.preventDefault(); if (pendingStart !== null) addSegment(); }
    if (e.key === "Escape") labelBox.blur();
  });
  box.addEventListener("input", draw);

  function typing(el) {
    return el && (el.tagName === "TEXTAREA" || el.tagName === "SELECT" ||
      (el.tagName === "INPUT" && el.type !== "radio" && el.type !== "checkbox") || el.isContentEditable);
  }
  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;  // Ctrl+Enter (submit) is annotate.js's
    if (typing(e.target)) { if (e.key === "Escape") e.target.blur(); return; }
    var step = e.shiftKey ? 10 : 1, handled = true;
    switch (e.key) {
      case " ": toggle(); break;
      case "ArrowRight": seek(frame + step); break;
      case "ArrowLeft": seek(frame - step); break;
      case "Home": seek(0); break;
      case "End": seek(n - 1); break;
      case "s": case "S": document.getElementById("success-yes").checked = true; break;
      case "f": case "F": document.getElementById("success-no").checked = true; break;
      case "[": markStart(); break;
      case "]": addSegment(); break;
      case "i": case "I": document.getElementById("instruction").focus(); break;
      default: handled = false;
    }
    if (handled) e.preventDefault();
  });
  videos.forEach(function (v) {  // show the first frame of the episode's span once the video can seek
    v.addEventListener("loadedmetadata", function () { v.currentTime = timeOfFrame(v, frame); }, { once: true });
  });
  legend();
  show(0);
})();
