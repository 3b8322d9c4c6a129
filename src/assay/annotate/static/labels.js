// The classify and spans tasks (no build step, no dependencies).
//   classify: a label's key (1-9 by default) toggles it (multi-label) or picks it; labels the annotator changed from
//             the model's suggestion are outlined.
//   spans:    select text with the mouse to mark a span with the chosen label (a label's key chooses it); click a
//             span to remove it. The spans live in the form's "spans" box as START END LABEL lines, in Unicode code
//             points (Python string indices), converted here from the browser's UTF-16 offsets.
(function () {
  "use strict";
  var form = document.getElementById("annotate-form");
  if (!form) return;
  var task = form.getAttribute("data-task");

  function typing(el) {
    return el && (el.tagName === "TEXTAREA" || (el.tagName === "INPUT" && el.type !== "radio" && el.type !== "checkbox")
      || el.isContentEditable);
  }
  function byKey(name, key) {
    var inputs = form.querySelectorAll('input[name="' + name + '"]');
    for (var i = 0; i < inputs.length; i++) if (inputs[i].getAttribute("data-key") === key) return inputs[i];
    return null;
  }
  function onKey(name, act) {
    document.addEventListener("keydown", function (e) {
      if (e.ctrlKey || e.metaKey || e.altKey || typing(e.target)) return;
      var input = byKey(name, e.key);
      if (input) { act(input); e.preventDefault(); }
    });
  }

  if (task === "classify") {
    var markChanged = function () {
      form.querySelectorAll(".label-choice").forEach(function (label) {
        var input = label.querySelector("input");
        label.classList.toggle("changed", input.checked !== (label.getAttribute("data-suggested") === "1"));
      });
    };
    onKey("label", function (input) {
      input.checked = input.type === "checkbox" ? !input.checked : true;
      markChanged();
    });
    form.addEventListener("change", markChanged);
    markChanged();
  } else if (task === "spans") {
    setUpSpans();
  }

  function setUpSpans() {
    var data = JSON.parse(document.getElementById("spans-data").textContent);
    var text = data.text;
    var box = document.getElementById("span-text");
    var list = document.getElementById("span-list");
    var area = document.getElementById("spans");
    var status = document.getElementById("span-status");
    var chars = Array.from(text);  // code points
    var u16 = [0];                 // u16[k] = UTF-16 offset of code point k
    chars.forEach(function (ch) { u16.push(u16[u16.length - 1] + ch.length); });
    var scoreOf = {};
    data.suggested.forEach(function (s) { scoreOf[s.start + " " + s.end + " " + s.label] = s.score; });

    function toCodePoint(offset, roundUp) {  // a UTF-16 offset to a code point index (inside a pair: round)
      var lo = 0, hi = chars.length;
      while (lo < hi) { var mid = (lo + hi) >> 1; if (u16[mid] < offset) lo = mid + 1; else hi = mid; }
      return (u16[lo] !== offset && !roundUp) ? lo - 1 : lo;
    }
    function slice(s) { return text.slice(u16[s.start], u16[s.end]); }
    function parse() {
      var out = [];
      area.value.split("\n").forEach(function (line) {
        var m = /^\s*(\d+)\s+(\d+)\s+(.+?)\s*$/.exec(line);
        if (m && +m[1] < +m[2] && +m[2] <= chars.length) out.push({ start: +m[1], end: +m[2], label: m[3] });
      });
      return out.sort(function (a, b) { return a.start - b.start || a.end - b.end; });
    }
    var spans = parse();

    function save() {
      area.value = spans.map(function (s) { return s.start + " " + s.end + " " + s.label; }).join("\n") + (spans.length ? "\n" : "");
    }
    function render() {
      box.textContent = "";
      list.textContent = "";
      var pos = 0;
      spans.forEach(function (s, i) {
        box.appendChild(document.createTextNode(text.slice(u16[pos], u16[s.start])));
        var score = scoreOf[s.start + " " + s.end + " " + s.label];
        var mark = document.createElement("mark");
        mark.className = score === undefined ? "span" : "span suggested";
        mark.setAttribute("data-label", s.label);
        mark.setAttribute("data-index", String(i));
        mark.title = s.label + (score === undefined ? "" : " · suggested (" + score.toFixed(2) + ")") + " · click to remove";
        mark.textContent = slice(s);
        box.appendChild(mark);
        pos = s.end;

        var li = document.createElement("li");
        li.className = "span-item";
        var what = document.createElement("span");
        what.textContent = s.label + " “" + slice(s) + "” (" + s.start + "–" + s.end + ")";
        li.appendChild(what);
        if (score !== undefined) {
          var badge = document.createElement("span");
          badge.className = "suggested";
          badge.textContent = "suggested (" + score.toFixed(2) + ")";
          li.appendChild(document.createTextNode(" "));
          li.appendChild(badge);
        }
        var remove = document.createElement("button");
        remove.type = "button";
        remove.className = "remove-span";
        remove.textContent = "remove";
        remove.addEventListener("click", function () { removeAt(i); });
        li.appendChild(remove);
        list.appendChild(li);
      });
      box.appendChild(document.createTextNode(text.slice(u16[pos])));
    }
    function removeAt(i) {
      var s = spans[i];
      spans.splice(i, 1);
      status.textContent = "removed " + s.label + " “" + slice(s) + "”";
      save(); render();
    }
    function label() {
      var picked = form.querySelector('input[name="span_label"]:checked');
      return picked ? picked.value : null;
    }
    function offsetIn(node, offset) {  // UTF-16 offset of (node, offset) from the start of the text box
      var r = document.createRange();
      r.setStart(box, 0);
      r.setEnd(node, offset);
      return r.toString().length;
    }

    box.addEventListener("mouseup", function () {
      var sel = window.getSelection();
      if (!sel.rangeCount || sel.isCollapsed) return;
      var r = sel.getRangeAt(0);
      if (!box.contains(r.startContainer) || !box.contains(r.endContainer)) return;
      var start = toCodePoint(offsetIn(r.startContainer, r.startOffset), false);
      var end = toCodePoint(offsetIn(r.endContainer, r.endOffset), true);
      while (start < end && /\s/.test(chars[start])) start++;
      while (end > start && /\s/.test(chars[end - 1])) end--;
      sel.removeAllRanges();
      if (start >= end) return;
      var name = label();
      if (!name) { status.textContent = "choose a label first"; return; }
      var clash = spans.filter(function (s) { return s.start < end && start < s.end; })[0];
      if (clash) { status.textContent = "overlaps " + clash.label + " “" + slice(clash) + "”: remove that span first"; return; }
      var span = { start: start, end: end, label: name };
      spans.push(span);
      spans.sort(function (a, b) { return a.start - b.start || a.end - b.end; });
      status.textContent = "added " + name + " “" + slice(span) + "”";
      save(); render();
    });
    box.addEventListener("click", function (e) {
      var mark = e.target.closest ? e.target.closest("mark") : null;
      if (mark && box.contains(mark) && window.getSelection().isCollapsed) removeAt(Number(mark.getAttribute("data-index")));
    });
    area.addEventListener("change", function () { spans = parse(); render(); });
    onKey("span_label", function (input) { input.checked = true; });
    render();
  }
})();
