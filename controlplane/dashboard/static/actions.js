// Dashboard actions: confirmation for destructive forms, bulk selection, copy buttons and the
// rollout form's live selector preview. Forms carry the CSRF token themselves.
(function () {
  "use strict";

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { event.preventDefault(); }
  });

  var all = document.getElementById("select-all");
  if (all) {
    all.addEventListener("change", function () {
      document.querySelectorAll("input[name=device_ids]").forEach(function (box) {
        box.checked = all.checked;
      });
    });
  }

  document.querySelectorAll("[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var text = document.getElementById(button.getAttribute("data-copy")).textContent;
      if (navigator.clipboard) { navigator.clipboard.writeText(text); }
      button.textContent = "Copied";
    });
  });

  var form = document.getElementById("rollout-form");
  if (!form) { return; }
  var kind = document.getElementById("kind");
  function showKind() {  // a model version or an agent release: only its own field shows
    if (!kind) { return; }
    document.getElementById("model").closest("label").hidden = kind.value !== "model";
    document.getElementById("agent").closest("label").hidden = kind.value !== "agent";
  }
  if (kind) { kind.addEventListener("change", showKind); showKind(); }
  var count = document.getElementById("preview-count");
  var list = document.getElementById("preview-devices");
  var timer = null, asked = 0;

  function show(answer, n) {
    if (n !== asked) { return; }  // an older answer arriving late
    list.textContent = "";
    if (answer.error) { count.textContent = answer.error; count.className = "field-error"; return; }
    count.className = "";
    count.textContent = answer.count + " device" + (answer.count === 1 ? "" : "s") +
      " match (" + answer.online + " online)";
    answer.devices.forEach(function (d) {
      var item = document.createElement("li");
      item.textContent = d.id + (d.name ? " · " + d.name : "") + " · " +
        (d.device_class || "no class") + (d.online ? "" : " · offline");
      list.appendChild(item);
    });
    if (answer.count > answer.devices.length) {
      var more = document.createElement("li");
      more.textContent = "… and " + (answer.count - answer.devices.length) + " more";
      list.appendChild(more);
    }
  }

  function refresh() {
    var query = new URLSearchParams();
    ["labels", "device_classes", "device_ids"].forEach(function (name) {
      query.set(name, form.elements[name].value);
    });
    var n = ++asked;
    fetch("/rollouts/preview?" + query.toString(), { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (answer) { show(answer, n); })
      .catch(function () { count.textContent = "preview unavailable"; });
  }

  form.querySelectorAll("[data-preview]").forEach(function (input) {
    input.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(refresh, 250);  // one request per pause in typing, not per key
    });
  });
  refresh();
})();
