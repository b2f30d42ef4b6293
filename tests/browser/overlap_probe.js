(function () {
  function run() {
    var all = document.querySelectorAll("details");
    for (var i = 0; i < all.length; i++) { all[i].open = true; }
    var boxes = [];
    var TOL = 1.5;
    function clipOf(el) {
      var r = {l: -1e9, t: -1e9, r: 1e9, b: 1e9};
      for (var n = el; n && n !== document.documentElement; n = n.parentElement) {
        var cs = getComputedStyle(n);
        if (cs.overflowX !== "visible" || cs.overflowY !== "visible") {
          var b = n.getBoundingClientRect();
          r = {l: Math.max(r.l, b.left), t: Math.max(r.t, b.top),
               r: Math.min(r.r, b.right), b: Math.min(r.b, b.bottom)};
        }
      }
      return r;
    }
    function add(rect, owner, label, clip) {
      var l = Math.max(rect.left, clip.l), t = Math.max(rect.top, clip.t);
      var r = Math.min(rect.right, clip.r), b = Math.min(rect.bottom, clip.b);
      if (r - l > 0.5 && b - t > 0.5) {
        boxes.push({l: l + scrollX, t: t + scrollY, r: r + scrollX, b: b + scrollY,
                    owner: owner, label: label});
      }
    }
    var owners = 0;
    // HTML text: one box per line of each text node
    var walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    var node;
    while ((node = walker.nextNode())) {
      if (!node.nodeValue.trim()) { continue; }
      var p = node.parentElement;
      if (!p || p.closest("svg") || p.closest("script,style,#__probe__")) { continue; }
      var cs = getComputedStyle(p);
      if (cs.visibility === "hidden" || cs.display === "none") { continue; }
      var range = document.createRange();
      range.selectNodeContents(node);
      var rects = range.getClientRects();
      var clip = clipOf(p);
      var id = owners++;
      for (var k = 0; k < rects.length; k++) {
        add(rects[k], id, node.nodeValue.trim().slice(0, 40), clip);
      }
    }
    // SVG text: one box per character (rotated text keeps small boxes)
    var texts = document.querySelectorAll("svg text");
    for (var i2 = 0; i2 < texts.length; i2++) {
      var t = texts[i2];
      var n2 = t.getNumberOfChars();
      var ctm = t.getScreenCTM();
      if (!ctm || !n2) { continue; }
      var clip2 = clipOf(t.ownerSVGElement.parentElement);
      var id2 = owners++;
      var label = (t.textContent || "").trim().slice(0, 40);
      for (var c = 0; c < n2; c++) {
        var e;
        try { e = t.getExtentOfChar(c); } catch (err) { continue; }
        if (!e.width) { continue; }
        // shrink the glyph cell to its middle (the cell holds the whole em box)
        var pts = [[e.x, e.y + e.height * 0.25], [e.x + e.width, e.y + e.height * 0.25],
                   [e.x, e.y + e.height * 0.85], [e.x + e.width, e.y + e.height * 0.85]];
        var xs = [], ys = [];
        for (var q = 0; q < 4; q++) {
          var P = new DOMPoint(pts[q][0], pts[q][1]).matrixTransform(ctm);
          xs.push(P.x); ys.push(P.y);
        }
        add({left: Math.min.apply(null, xs), right: Math.max.apply(null, xs),
             top: Math.min.apply(null, ys), bottom: Math.max.apply(null, ys)}, id2, label, clip2);
      }
    }
    boxes.sort(function (a, b) { return a.t - b.t; });
    var hits = [], seen = {};
    for (var a = 0; a < boxes.length; a++) {
      var A = boxes[a];
      for (var b2 = a + 1; b2 < boxes.length && boxes[b2].t < A.b - TOL; b2++) {
        var B = boxes[b2];
        if (A.owner === B.owner) { continue; }
        var w = Math.min(A.r, B.r) - Math.max(A.l, B.l);
        var h = Math.min(A.b, B.b) - Math.max(A.t, B.t);
        if (w > TOL && h > TOL) {
          var key = A.owner + ":" + B.owner;
          if (seen[key]) { continue; }
          seen[key] = 1;
          hits.push(JSON.stringify(A.label) + " overlaps " + JSON.stringify(B.label) +
                    " at " + Math.round(Math.max(A.l, B.l)) + "," + Math.round(Math.max(A.t, B.t)));
        }
      }
    }
    var pre = document.createElement("pre");
    pre.id = "__probe__";
    pre.textContent = JSON.stringify({boxes: boxes.length, overlaps: hits,
      height: document.documentElement.scrollHeight});
    document.body.appendChild(pre);
  }
  window.addEventListener("load", function () { setTimeout(run, 0); });
})();
