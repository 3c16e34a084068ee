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

  function draw(host, data) {
    var svg = el("svg", { viewBox: "0 0 " + W + " " + H, class: "line-chart", role: "img",
                          "aria-label": data.metric });
    svg.appendChild(el("text", { x: PAD.l, y: 16, class: "title" }, data.metric));
    var points = data.points.map(function (p) {
      return { ms: Date.parse(p.t), avg: p.avg, max: p.max };
    }).filter(function (p) { return !isNaN(p.ms); });
    if (points.length === 0) {
      svg.appendChild(el("text", { x: W / 2, y: H / 2, class: "empty" }, "no data in this range"));
      host.appendChild(svg);
      return;
    }
    var values = [];
    points.forEach(function (p) {
      if (p.avg !== null) { values.push(p.avg); }
      if (p.max !== null) { values.push(p.max); }
    });
    var lo = Math.min.apply(null, values.concat([0])), hi = Math.max.apply(null, values);
    if (hi === lo) { hi = lo + 1; }
    var t0 = points[0].ms, t1 = points[points.length - 1].ms;
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
    svg.appendChild(el("path", { d: path(points, "max", x, y), class: "series max" }));
    svg.appendChild(el("path", { d: path(points, "avg", x, y), class: "series avg" }));
    if (points.length === 1) {
      svg.appendChild(el("circle", { cx: x(t0), cy: y(points[0].avg), r: 3, class: "dot-point" }));
    }
    host.appendChild(svg);
  }

  document.querySelectorAll("[data-chart]").forEach(function (host) {
    var source = document.getElementById(host.getAttribute("data-chart"));
    if (source) { draw(host, JSON.parse(source.textContent)); }
  });
})();
