// Line charts drawn as SVG from JSON embedded in the page: no library, no network.
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var W = 560, H = 200, PAD = { l: 52, r: 12, t: 24, b: 28 };

  function el(name, attrs, text) {
    var node = document.createElementNS(NS, name);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function fmt(v) {
    var a = Math.abs(v);
    if (a >= 1e9) { return (v / 1e9).toFixed(1) + "G"; }
    if (a >= 1e6) { return (v / 1e6).toFixed(1) + "M"; }
    if (a >= 1e3) { return (v / 1e3).toFixed(1) + "k"; }
    return a >= 10 ? v.toFixed(0) : v.toFixed(2);
  }

  function hhmm(ms) {
    var d = new Date(ms);
    return ("0" + d.getHours()).slice(-2) + ":" + ("0" + d.getMinutes()).slice(-2);
  }

  function path(points, key, x, y) {
    var d = "";
    points.forEach(function (p, i) {
      if (p[key] === null || p[key] === undefined) { return; }
      d += (d === "" ? "M" : "L") + x(p.ms).toFixed(1) + "," + y(p[key]).toFixed(1);
    });
    return d;
  }

  // The "no data" note when there is nothing to plot; true when it was drawn.
  function empty(host, svg, points) {
    if (points.length > 0) { return false; }
    svg.appendChild(el("text", { x: W / 2, y: H / 2, class: "empty" }, "no data in this range"));
    host.appendChild(svg);
    return true;
  }

  // Scales for values lo..hi over times t0..t1, with grid lines and labelled axes drawn.
  function axes(svg, lo, hi, t0, t1) {
    if (hi === lo) { hi = lo + 1; }
    if (t1 === t0) { t1 = t0 + 1; }
    var x = function (ms) { return PAD.l + (ms - t0) / (t1 - t0) * (W - PAD.l - PAD.r); };
    var y = function (v) { return H - PAD.b - (v - lo) / (hi - lo) * (H - PAD.t - PAD.b); };
    [lo, (lo + hi) / 2, hi].forEach(function (v) {
      svg.appendChild(el("line", { x1: PAD.l, x2: W - PAD.r, y1: y(v), y2: y(v), class: "grid" }));
      svg.appendChild(el("text", { x: PAD.l - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" },
                         fmt(v)));
    });
    svg.appendChild(el("text", { x: PAD.l, y: H - 8, class: "axis" }, hhmm(t0)));
    svg.appendChild(el("text", { x: W - PAD.r, y: H - 8, class: "axis", "text-anchor": "end" },
                       hhmm(t1)));
    return { x: x, y: y };
  }

  function draw(host, data) {
    var svg = el("svg", { viewBox: "0 0 " + W + " " + H, class: "line-chart", role: "img",
                          "aria-label": data.metric });
    svg.appendChild(el("text", { x: PAD.l, y: 16, class: "title" }, data.metric));
    var points = data.points.map(function (p) {
      return { ms: Date.parse(p.t), avg: p.avg, max: p.max };
    }).filter(function (p) { return !isNaN(p.ms); });
    if (empty(host, svg, points)) { return; }
    var values = [];
    points.forEach(function (p) {
      if (p.avg !== null) { values.push(p.avg); }
      if (p.max !== null) { values.push(p.max); }
    });
    var t0 = points[0].ms;
    var scale = axes(svg, Math.min.apply(null, values.concat([0])), Math.max.apply(null, values),
                     t0, points[points.length - 1].ms);
    var x = scale.x, y = scale.y;
    svg.appendChild(el("path", { d: path(points, "max", x, y), class: "series max" }));
    svg.appendChild(el("path", { d: path(points, "avg", x, y), class: "series avg" }));
    if (points.length === 1) {
      svg.appendChild(el("circle", { cx: x(t0), cy: y(points[0].avg), r: 3, class: "dot-point" }));
    }
    host.appendChild(svg);
  }

  var COLORS = ["#2563eb", "#16a34a", "#d97706", "#9333ea", "#dc2626", "#0891b2"];

  // Several named lines on one chart (fleet per model / per hardware class), with a legend.
  function drawSeries(host, data) {
    var svg = el("svg", { viewBox: "0 0 " + W + " " + (H + 22 * Math.ceil(data.series.length / 3)),
                          class: "line-chart multi", role: "img", "aria-label": data.metric });
    svg.appendChild(el("text", { x: PAD.l, y: 16, class: "title" }, data.metric));
    var lines = data.series.map(function (s) {
      return { name: s.name, points: s.points.map(function (p) {
        return { ms: Date.parse(p.t), avg: p.avg };
      }).filter(function (p) { return !isNaN(p.ms) && p.avg !== null; }) };
    });
    var all = [];
    lines.forEach(function (l) { all = all.concat(l.points); });
    if (empty(host, svg, all)) { return; }
    var times = all.map(function (p) { return p.ms; });
    var scale = axes(svg, 0, Math.max.apply(null, all.map(function (p) { return p.avg; })),
                     Math.min.apply(null, times), Math.max.apply(null, times));
    var x = scale.x, y = scale.y;
    lines.forEach(function (l, i) {
      var color = COLORS[i % COLORS.length];
      var line = el("path", { d: path(l.points, "avg", x, y), class: "series group",
                              stroke: color, "data-series": l.name });
      svg.appendChild(line);
      if (l.points.length === 1) {
        svg.appendChild(el("circle", { cx: x(l.points[0].ms), cy: y(l.points[0].avg), r: 3,
                                       fill: color }));
      }
      var lx = PAD.l + (i % 3) * 170, ly = H + 10 + 22 * Math.floor(i / 3);
      svg.appendChild(el("rect", { x: lx, y: ly - 9, width: 12, height: 4, fill: color }));
      svg.appendChild(el("text", { x: lx + 16, y: ly - 4, class: "legend" }, l.name));
    });
    host.appendChild(svg);
  }

  var STATE_COLORS = { succeeded: "#16a34a", in_progress: "#f59e0b", queued: "#cbd5e1",
                       failed: "#dc2626", timed_out: "#dc2626", rolled_back: "#9333ea",
                       canceled: "#9ca3af" };

  // A device's rollouts on one time axis, a row each: a model that succeeded stays until the
  // next one that did (what the device ran when); a failed or rolled-back attempt spans its
  // dispatch to its end. Colored by outcome.
  function drawHistory(host, data) {
    var HW = 900, left = 260, right = 16, rowH = 24;
    var now = Date.parse(data.now);
    var items = data.items.map(function (i) {
      return { model: i.model, state: i.state, rollout: i.rollout,
               from: Date.parse(i.from), to: Date.parse(i.to) };
    });
    var ok = items.filter(function (i) { return i.state === "succeeded"; });
    items.forEach(function (item) {
      if (item.state !== "succeeded") { item.start = item.from; item.end = item.to; return; }
      var next = ok.filter(function (o) { return o.to > item.to; })[0];
      item.start = item.to;
      item.end = next ? next.to : now;
    });
    var h = 30 + rowH * Math.max(items.length, 1);
    var svg = el("svg", { viewBox: "0 0 " + HW + " " + h, class: "history-chart", role: "img",
                          "aria-label": "model history" });
    if (items.length === 0) {
      svg.appendChild(el("text", { x: 8, y: 20, class: "empty" }, "no rollout reached this device yet"));
      host.appendChild(svg);
      return;
    }
    var t0 = Math.min.apply(null, items.map(function (i) { return i.start; }));
    var t1 = Math.max(now, Math.max.apply(null, items.map(function (i) { return i.end; })));
    if (t1 === t0) { t1 = t0 + 1; }
    var x = function (ms) { return left + (ms - t0) / (t1 - t0) * (HW - left - right); };
    items.forEach(function (item, n) {
      var top = 6 + n * rowH;
      svg.appendChild(el("text", { x: 4, y: top + 13, class: "legend" },
                         item.model + " · " + item.state.replace("_", " ")));
      var width = Math.max(3, x(item.end) - x(item.start));
      var bar = el("rect", { x: x(item.start), y: top + 2, width: width, height: 14, rx: 3,
                             fill: STATE_COLORS[item.state] || "#64748b", class: "history-bar",
                             "data-state": item.state });
      bar.appendChild(el("title", {}, item.model + " · " + item.state + " · " + item.rollout));
      svg.appendChild(bar);
    });
    var day = function (ms) { return new Date(ms).toISOString().slice(5, 16).replace("T", " "); };
    svg.appendChild(el("line", { x1: left, x2: HW - right, y1: h - 20, y2: h - 20, class: "grid" }));
    svg.appendChild(el("text", { x: left, y: h - 6, class: "axis" }, day(t0) + " UTC"));
    svg.appendChild(el("text", { x: HW - right, y: h - 6, class: "axis", "text-anchor": "end" }, "now"));
    host.appendChild(svg);
  }

  document.querySelectorAll("[data-chart]").forEach(function (host) {
    var source = document.getElementById(host.getAttribute("data-chart"));
    if (!source) { return; }
    var data = JSON.parse(source.textContent);
    if (data.series) { drawSeries(host, data); } else { draw(host, data); }
  });
  document.querySelectorAll("[data-history]").forEach(function (host) {
    var source = document.getElementById(host.getAttribute("data-history"));
    if (source) { drawHistory(host, JSON.parse(source.textContent)); }
  });
})();
