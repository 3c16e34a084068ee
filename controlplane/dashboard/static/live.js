// Live pages: one EventSource per page to /live/<stream>; the server sends at most one event
// a second per stream (a snapshot, or for the devices page only the rows that changed).
(function () {
  "use strict";
  var root = document.querySelector("[data-live]");
  if (!root || !window.EventSource) { return; }
  var kind = root.getAttribute("data-live");
  var url = "/live/" + kind;
  if (kind === "rollout") { url += "?id=" + encodeURIComponent(root.getAttribute("data-rollout-id")); }

  function setText(scope, field, value) {
    var node = scope.querySelector("[data-field='" + field + "']");
    if (node && node.textContent !== String(value)) { node.textContent = value; }
  }

  function fleet(data) {
    document.getElementById("total-devices").textContent = data.total;
    document.getElementById("online-devices").textContent = data.online;
    Object.keys(data.by_health).forEach(function (health) {
      var tile = root.querySelector("[data-health='" + health + "'] .num");
      if (tile) { tile.textContent = data.by_health[health]; }
    });
    root.querySelectorAll("[data-health]").forEach(function (tile) {
      if (!(tile.getAttribute("data-health") in data.by_health)) {
        tile.querySelector(".num").textContent = "0";
      }
    });
  }

  function rollout(data) {
    if (data.missing) { return; }
    var status = root.querySelector("[data-field='status']");
    if (status.textContent !== data.status) {
      status.textContent = data.status;
      status.className = "label status-" + data.status;
    }
    setText(root, "reason", data.reason);
    var actions = root.querySelector(".actions");
    if (actions) {
      var allowed = JSON.parse(actions.getAttribute("data-verbs"))[data.status] || [];
      actions.querySelectorAll("form[data-verb]").forEach(function (form) {
        form.hidden = allowed.indexOf(form.getAttribute("data-verb")) < 0;
      });
    }
    data.waves.forEach(function (w) {
      var item = root.querySelector("li[data-wave='" + w.index + "']");
      if (!item) { return; }
      item.className = w.index === data.current_wave ? "current" : (w.index < data.current_wave ? "done" : "later");
      ["devices", "succeeded", "failed", "in_progress", "queued"].forEach(function (key) {
        setText(item, key, w[key]);
        var seg = item.querySelector("[data-seg='" + key + "']");
        if (seg) { seg.style.flexGrow = w[key]; }
      });
    });
    (data.devices || []).forEach(function (d) {
      var row = document.querySelector("#rollout-devices tr[data-device-id='" + d.id + "']");
      if (!row) { return; }
      setText(row, "state", d.state);
      setText(row, "sub_status", d.sub_status);
      setText(row, "detail", d.detail);
    });
  }

  function devices(data) {
    if (data.reload) { window.location.reload(); return; }
    Object.keys(data.changed).forEach(function (id) {
      var row = root.querySelector("tr[data-device-id='" + id + "']");
      var value = data.changed[id];
      if (!row) { return; }
      if (value === null) { row.remove(); return; }
      var cell = row.querySelector("[data-field='status']");
      cell.innerHTML = "";
      var dot = document.createElement("span");
      dot.className = "dot " + (value[0] ? "on" : "off");
      cell.appendChild(dot);
      cell.appendChild(document.createTextNode(value[0] ? "online" : "offline"));
      setText(row, "model", value[1] || "–");
    });
  }

  var apply = { fleet: fleet, rollout: rollout, devices: devices }[kind];
  var source = new EventSource(url);
  source.onmessage = function (event) {
    apply(JSON.parse(event.data));
    root.setAttribute("data-live-updated", String(Date.now()));
  };
})();
