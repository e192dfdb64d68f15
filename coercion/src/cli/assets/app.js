// coercion web UI: live plan updates (server-sent events), uploads of exported plans, and
// remembering which tree nodes the user opened or closed across updates.
// All HTML inserted here was rendered and escaped by the server.
(function () {
  "use strict";

  // Nodes the user opened or closed themselves, by object id; live updates keep that choice.
  var chosen = new Map();
  document.addEventListener("click", function (ev) {
    var summary = ev.target.closest ? ev.target.closest("summary") : null;
    if (!summary) return;
    var node = summary.parentElement;
    if (node && node.tagName === "DETAILS" && node.dataset.id) {
      chosen.set(node.dataset.id, !node.open);
    }
  }, true);

  function restore(root) {
    root.querySelectorAll("details[data-id]").forEach(function (d) {
      if (chosen.has(d.dataset.id)) d.open = chosen.get(d.dataset.id);
    });
  }

  var live = document.getElementById("live");
  var state = document.getElementById("live-state");
  if (live && live.dataset.events && window.EventSource) {
    var updates = 0;
    var source = new EventSource(live.dataset.events);
    if (state) { state.textContent = "live"; state.classList.add("on"); }
    source.addEventListener("plan", function (ev) {
      var msg = JSON.parse(ev.data);
      live.innerHTML = msg.html;
      restore(live);
      updates += 1;
      document.body.dataset.liveUpdates = String(updates);
      if (state) state.textContent = "live · " + msg.status;
    });
    // After the first render, only what changed: the page's head, and each changed node —
    // an action whole, a container's status and head line.
    source.addEventListener("patch", function (ev) {
      var msg = JSON.parse(ev.data);
      var head = live.querySelector(".plan-head");
      if (head) head.innerHTML = msg.head;
      msg.nodes.forEach(function (n) {
        var node = live.querySelector('details[data-id="' + n.id + '"]');
        if (!node) return;
        if (n.html !== undefined) {
          var holder = document.createElement("div");
          holder.innerHTML = n.html;
          var fresh = holder.firstElementChild;
          if (!fresh) return;
          fresh.open = chosen.has(n.id) ? chosen.get(n.id) : node.open;
          // Inner sections (the request, attempts) stay as the user left them.
          var before = node.querySelectorAll("details");
          var after = fresh.querySelectorAll("details");
          for (var i = 0; i < before.length && i < after.length; i++) after[i].open = before[i].open;
          node.replaceWith(fresh);
        } else {
          node.className = n.class;
          node.dataset.status = n.status;
          var summary = node.querySelector(":scope > summary");
          if (summary) summary.innerHTML = n.summary;
        }
      });
      updates += 1;
      document.body.dataset.liveUpdates = String(updates);
      if (state) state.textContent = "live · " + msg.status;
    });
    source.addEventListener("end", function () {
      source.close();
      if (state) { state.textContent = "finished"; state.classList.remove("on"); }
    });
    source.addEventListener("error", function () {
      if (source.readyState === EventSource.CLOSED && state) {
        state.textContent = "disconnected"; state.classList.remove("on");
      }
    });
  }

  var zone = document.getElementById("dropzone");
  var input = document.getElementById("plan-file");
  var result = document.getElementById("upload-result");
  if (zone && input && result) {
    var send = function (file) {
      if (!file) return;
      result.innerHTML = "";
      var note = document.createElement("p");
      note.className = "muted";
      note.textContent = "Reading " + file.name + "…";
      result.appendChild(note);
      fetch("/upload", { method: "POST", headers: { "Content-Type": "application/json" }, body: file })
        .then(function (resp) { return resp.text().then(function (text) { return { resp: resp, text: text }; }); })
        .then(function (r) {
          if (r.resp.status === 413) {
            result.innerHTML = "";
            var err = document.createElement("div");
            err.className = "notice error";
            err.textContent = "This file is too large to be an exported plan (the limit is " + zone.dataset.limit + ").";
            result.appendChild(err);
          } else {
            result.innerHTML = r.text;
          }
        })
        .catch(function (e) {
          result.innerHTML = "";
          var err = document.createElement("div");
          err.className = "notice error";
          err.textContent = "Upload failed: " + e;
          result.appendChild(err);
        });
    };
    input.addEventListener("change", function () { send(input.files[0]); });
    zone.addEventListener("dragover", function (ev) { ev.preventDefault(); zone.classList.add("over"); });
    zone.addEventListener("dragleave", function () { zone.classList.remove("over"); });
    zone.addEventListener("drop", function (ev) {
      ev.preventDefault();
      zone.classList.remove("over");
      send(ev.dataTransfer.files[0]);
    });
  }
})();
