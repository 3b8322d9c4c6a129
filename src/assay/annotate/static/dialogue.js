// The dialogue task: the expert asks, the server's model answers (POST .../dialogue/turn), the expert corrects model
// turns in place, marks the final answer, and submits the transcript with the form. No inline code (the CSP forbids
// it): everything is wired here.
(function () {
  "use strict";
  var data = document.getElementById("dialogue-data");
  var form = document.getElementById("annotate-form");
  if (!data || !form) return;
  var cfg = JSON.parse(data.textContent);
  var csrf = form.querySelector("input[name=csrf_token]").value;
  var box = document.getElementById("dialogue-turns");
  var status = document.getElementById("dialogue-status");
  var message = document.getElementById("expert-message");
  var ask = document.getElementById("ask");
  var finalAnswer = document.getElementById("final-answer");
  var finalTurn = document.getElementById("final-turn");
  var transcript = document.getElementById("transcript");
  var turns = [];  // {role: "model"|"expert", text, original}
  // a submission the server refused comes back with the transcript as it was sent: nothing typed is lost
  try {
    JSON.parse(cfg.saved || "[]").forEach(function (t) {
      if (t && (t.role === "model" || t.role === "expert") && typeof t.text === "string") {
        turns.push({ role: t.role, text: t.text, original: t.text });
      }
    });
  } catch (e) { turns = []; }
  if (cfg.final_turn !== "" && turns[+cfg.final_turn]) finalTurn.value = String(cfg.final_turn);

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function render() {
    box.textContent = "";
    turns.forEach(function (t, i) {
      var div = el("div", "turn " + t.role + (String(i) === finalTurn.value ? " final" : ""));
      div.id = "turn-" + i;
      var label = el("div", "label", t.role === "model" ? "Model" : "You");
      if (t.role === "model") {
        var badge = el("span", "badge", t.text.trim() !== t.original.trim() ? " · corrected" : "");
        badge.id = "badge-" + i;
        label.appendChild(badge);
        div.appendChild(label);
        var area = el("textarea", "model-text");
        area.id = "model-text-" + i;
        area.rows = 4;
        area.value = t.text;
        area.addEventListener("input", function () {
          t.text = area.value;
          badge.textContent = t.text.trim() !== t.original.trim() ? " · corrected" : "";
          if (finalTurn.value === String(i)) finalAnswer.value = t.text;
        });
        div.appendChild(area);
        var mark = el("button", "mark-final", "Mark as final answer");
        mark.type = "button";
        mark.id = "final-" + i;
        mark.addEventListener("click", function () {
          finalTurn.value = String(i);
          finalAnswer.value = t.text;
          render();
        });
        div.appendChild(mark);
      } else {
        div.appendChild(label);
        div.appendChild(el("div", "text", t.text));
      }
      box.appendChild(div);
    });
    var started = turns.length > 0;
    message.disabled = !started;
    message.placeholder = started ? "e.g. That dose is wrong for children: what changes?" : "Ask the model first";
    ask.textContent = started ? "Send to the model" : "Ask the model";
    var full = turns.length >= cfg.max_turns - 1;
    ask.disabled = full;
    if (full) status.textContent = "The dialogue is at its longest: mark the final answer and submit.";
  }

  ask.addEventListener("click", function () {
    var text = message.value.trim();
    if (turns.length > 0) {
      if (!text) { status.textContent = "Write your message first."; message.focus(); return; }
      turns.push({ role: "expert", text: text, original: text });
    }
    var body = JSON.stringify({ turns: turns.map(function (t) { return { role: t.role, text: t.text }; }) });
    ask.disabled = true;
    status.textContent = "The model is answering…";
    render();
    ask.disabled = true;
    fetch("/api/projects/" + cfg.project + "/assignments/" + cfg.assignment + "/dialogue/turn", {
      method: "POST", credentials: "same-origin",
      headers: { "content-type": "application/json", "x-csrf-token": csrf }, body: body
    }).then(function (r) {
      return r.json().then(function (j) { return { ok: r.ok, body: j }; });
    }).then(function (res) {
      if (!res.ok) throw new Error(res.body.detail || "the model did not answer");
      turns.push({ role: "model", text: res.body.text, original: res.body.text });
      message.value = "";
      status.textContent = "";
      render();
      document.getElementById("model-text-" + (turns.length - 1)).focus();
    }).catch(function (err) {
      if (turns.length && turns[turns.length - 1].role === "expert") turns.pop();
      status.textContent = "Error: " + err.message;
      render();
    });
  });

  form.addEventListener("submit", function (e) {
    if (!turns.some(function (t) { return t.role === "model"; })) {
      e.preventDefault();
      e.stopImmediatePropagation();
      status.textContent = "Ask the model at least once before submitting.";
      return;
    }
    var i = finalTurn.value;
    if (i !== "" && (!turns[+i] || turns[+i].text.trim() !== finalAnswer.value.trim())) finalTurn.value = "";
    transcript.value = JSON.stringify(turns.map(function (t) { return { role: t.role, text: t.text }; }));
  }, true);
  render();
})();
