// Threshold view: a Streamlit Custom Component (v2) that redraws everything that depends on the
// segmentation threshold in the browser, with no server rerun per move.
//
// Python (app/components/threshold_view.py) sends data = {payload, view}:
//   payload: threshold_payload(): display image / level / truth PNGs (base64), the 101 full-
//            resolution foreground counts and, with a truth, the per-threshold metric table.
//   view:    {threshold, gen, key, min_area, card_threshold, card_label, style, opacity,
//             show_truth, title}; the slider adopts `threshold` on a first mount and when
//             `gen` changes (the caller moved it), else keeps the user's position (per key).
// The slider's `input` events redraw (canvas ImageData on precomputed typed arrays); its
// `change` events (release, keyboard step) send {release: {t, n}} to Python, debounced.
//
// Test hooks: [data-testid="tv-root"] carries data-ready, data-k, data-threshold,
// data-redraw-ms (last redraw's duration), data-redraw-at (performance.now() at its end),
// data-redraws (count), data-display-fg (display pixels in the drawn mask),
// data-level-hist (histogram of the decoded level map, JSON). Metric values carry
// data-metric="iou|dice|precision|recall|tgs".

const STATE = new WeakMap(); // parentElement -> instance (the module is imported once)
const POSITIONS = new Map();  // Python key -> {k, gen}: the user's slider, kept across remounts
const N_T = 101;
const SEND_DELAY_MS = 150;   // after a pointer release
const KEY_IDLE_MS = 1500;    // after the last arrow-key step (or at once when focus leaves)
const NARROW_PX = 700;
const MAX_CANVAS_PX = 360000; // per canvas: keeps a redraw well under 20 ms
const COLORS = {
  tp: "#009E73", fp: "#E69F00", fn: "#CC79A7",
  iou: "#0072B2", dice: "#D55E00", best: "#009E73", card: "#6F6F6F",
};
const METRICS = [
  ["iou", "IoU"], ["dice", "Dice"], ["precision", "Precision"], ["recall", "Recall"],
  ["tgs", "TGS score"],
];
const METRIC_HELP = {
  iou: "Intersection over union of the predicted and true masks (1 when both are empty)",
  dice: "Dice coefficient: 2 |A and B| / (|A| + |B|) (1 when both are empty)",
  precision: "Share of predicted pixels that are true foreground",
  recall: "Share of true foreground pixels that are predicted",
  tgs: "TGS score (Kaggle TGS Salt): mean over IoU cut-offs 0.50, 0.55, ..., 0.95 of " +
    "[IoU > cut-off]; an empty truth scores 1 only for an empty prediction",
};
const SVG_NS = "http://www.w3.org/2000/svg";
let uidCounter = 0;

// ------------------------------------------------------------------ small helpers

function el(tag, attrs = {}, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function svgEl(tag, attrs = {}, text) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

function hexToRgb(hex) {
  const v = parseInt(hex.replace("#", ""), 16);
  return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
}

const LITTLE = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
function pack(r, g, b) { // opaque RGBA as one Uint32 of an ImageData view
  return LITTLE ? ((255 << 24) | (b << 16) | (g << 8) | r) >>> 0
    : ((r << 24) | (g << 16) | (b << 8) | 255) >>> 0;
}
function unpack(v) {
  return LITTLE ? [v & 255, (v >>> 8) & 255, (v >>> 16) & 255]
    : [(v >>> 24) & 255, (v >>> 16) & 255, (v >>> 8) & 255];
}

function tinted(base32, color, alpha) { // base blended with `color` at `alpha`, every pixel
  const [cr, cg, cb] = hexToRgb(color);
  const out = new Uint32Array(base32.length);
  const a = Math.min(Math.max(alpha, 0), 1);
  for (let i = 0; i < base32.length; i++) {
    const [r, g, b] = unpack(base32[i]);
    out[i] = pack(r + (cr - r) * a + 0.5 | 0, g + (cg - g) * a + 0.5 | 0,
      b + (cb - b) * a + 0.5 | 0);
  }
  return out;
}

function fmt3(v) { return (v === null || v === undefined) ? "–" : Number(v).toFixed(3); }
function pct1(v) { return (100 * v).toFixed(1) + "%"; }
function tText(k) { return (k / 100).toFixed(2); }
function kOf(t) { return Math.min(N_T - 1, Math.max(0, Math.round(Number(t) * 100))); }

async function decodePng(b64) { // -> {w, h, rgba: Uint8ClampedArray}, exact bytes
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  const bitmap = await createImageBitmap(new Blob([bytes], { type: "image/png" }),
    { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const c = document.createElement("canvas");
  c.width = bitmap.width;
  c.height = bitmap.height;
  const ctx = c.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  const img = ctx.getImageData(0, 0, c.width, c.height);
  bitmap.close && bitmap.close();
  return { w: c.width, h: c.height, rgba: img.data, canvas: c };
}

function redChannel(rgba, n) {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = rgba[4 * i];
  return out;
}

// ------------------------------------------------------------------ the instance

class ThresholdView {
  constructor(parent) {
    this.parent = parent;
    this.uid = ++uidCounter;
    this.payload = null;   // current payload (JSON)
    this.decoded = null;   // {id, level, truth, imageCanvas, hist}
    this.view = null;
    this.k = 50;
    this.gen = null;
    this.layout = null;    // per-size arrays
    this.sendTimer = null;
    this.redraws = 0;
    this.setStateValue = () => {};
    this.build();
    this.resizeObserver = new ResizeObserver(() => this.scheduleLayout());
    this.resizeObserver.observe(this.root);
  }

  build() {
    const id = `tv-range-${this.uid}`;
    const root = this.root = el("div", { class: "tv", "data-testid": "tv-root",
      "data-ready": "0" });
    const controls = el("div", { class: "tv-controls" });
    this.label = el("label", { for: id, class: "tv-label" }, "Threshold");
    this.range = el("input", { type: "range", id, min: "0", max: "1", step: "0.01",
      value: "0.5", class: "tv-range", "data-testid": "tv-threshold",
      "aria-describedby": `tv-caption-${this.uid}` });
    this.valueText = el("output", { for: id, class: "tv-value",
      "data-testid": "tv-threshold-value" }, "0.50");
    controls.append(this.label, this.range, this.valueText);

    this.metricsBox = el("div", { class: "tv-metrics", role: "group",
      "aria-label": "Scores at this threshold" });
    this.metricEls = {};
    for (const [key, label] of METRICS) {
      const box = el("div", { class: "tv-metric", title: METRIC_HELP[key] });
      const v = el("span", { class: "tv-metric-value", "data-metric": key }, "–");
      box.append(el("span", { class: "tv-metric-label" }, label), v);
      this.metricsBox.append(box);
      this.metricEls[key] = v;
    }

    this.panels = el("div", { class: "tv-panels" });
    // (1) overlay
    this.pOverlay = el("figure", { class: "tv-panel", "data-panel": "overlay" });
    this.overlayTitle = el("figcaption", { class: "tv-title" }, "Prediction");
    this.cOverlay = el("canvas", { class: "tv-canvas", "data-testid": "tv-overlay",
      role: "img", "aria-label": "Image with the predicted mask" });
    this.caption = el("p", { class: "tv-caption", id: `tv-caption-${this.uid}`,
      "data-testid": "tv-mask-caption" });
    this.overlayLegend = el("p", { class: "tv-legend", "data-testid": "tv-overlay-legend" });
    // The mask at the threshold shown, made here from the exact levels (full resolution when
    // the image is shown at every pixel), so it is the mask on screen, not the last release.
    this.downloadBtn = el("button", { type: "button", class: "tv-download",
      "data-testid": "tv-download-mask" }, "Download mask (PNG)");
    this.downloadBtn.addEventListener("click", () => this.downloadMask());
    this.pOverlay.append(this.overlayTitle, this.cOverlay, this.caption, this.overlayLegend,
      this.downloadBtn);
    // (2) error map
    this.pErrors = el("figure", { class: "tv-panel", "data-panel": "errors" });
    this.errorsTitle = el("figcaption", { class: "tv-title" }, "Errors");
    this.cErrors = el("canvas", { class: "tv-canvas", "data-testid": "tv-errors",
      role: "img", "aria-label": "Error map: true positives, false positives, false negatives" });
    const errLegend = el("p", { class: "tv-legend", "data-testid": "tv-error-legend" });
    for (const [key, text] of [["tp", "TP found"], ["fp", "FP false alarm"],
      ["fn", "FN missed"]]) {
      const item = el("span", { class: "tv-key" });
      const sw = el("span", { class: "tv-swatch", "aria-hidden": "true" });
      sw.style.background = COLORS[key];
      item.append(sw, document.createTextNode(text));
      errLegend.append(item);
    }
    this.pErrors.append(this.errorsTitle, this.cErrors, errLegend);
    // (3) curves
    this.pCurve = el("figure", { class: "tv-panel", "data-panel": "curve" });
    this.curveTitle = el("figcaption", { class: "tv-title" }, "IoU and Dice vs threshold");
    this.svg = svgEl("svg", { class: "tv-svg", "data-testid": "tv-curve", role: "img",
      "aria-label": "IoU and Dice against the threshold" });
    const curveLegend = el("p", { class: "tv-legend" });
    for (const [key, text, dash] of [["iou", "IoU (solid)", ""], ["dice", "Dice (dashed)", "5 3"]]) {
      const item = el("span", { class: "tv-key" });
      const s = svgEl("svg", { width: 24, height: 10, "aria-hidden": "true" });
      s.append(svgEl("line", { x1: 1, y1: 5, x2: 23, y2: 5, stroke: COLORS[key],
        "stroke-width": 2.5, "stroke-dasharray": dash }));
      item.append(s, document.createTextNode(text));
      curveLegend.append(item);
    }
    this.pCurve.append(this.curveTitle, this.svg, curveLegend);

    root.append(controls, this.metricsBox, this.panels);
    this.parent.append(root);

    this.range.addEventListener("input", () => this.onInput());
    this.range.addEventListener("change", () => this.onChange());
    // Python hears a keyboard value once the keys rest (or focus leaves), not at every step.
    this.lastKey = -Infinity;
    this.range.addEventListener("keydown", () => { this.lastKey = performance.now(); });
    this.range.addEventListener("blur", () => this.flushSend());
    this.measureCtx = document.createElement("canvas").getContext("2d");
    this.onFonts = () => { // web fonts arrived: label widths change
      if (this.textWidths) this.textWidths.clear();
      if (this.layout && this.payload && this.payload.metrics) this.updateCurve(this.k);
    };
    if (document.fonts) document.fonts.addEventListener("loadingdone", this.onFonts);
  }

  // ---------------------------------------------------------------- data from Python

  update(data) {
    if (!data || !data.payload || !data.view) return;
    const view = data.view;
    const first = this.view === null;
    // The threshold itself is the browser's own between runs: only a new "gen" (the caller
    // changed it) or a fresh mount moves the slider. Other view options restyle.
    const { threshold: _t, gen: _g, ...look } = view;
    const lookKey = JSON.stringify(look);
    const restyle = first || lookKey !== this.lookKey;
    this.lookKey = lookKey;
    this.view = view;
    if (first || view.gen !== this.gen) {
      const kept = first ? POSITIONS.get(view.key) : undefined;
      this.gen = view.gen;
      this.k = kept && kept.gen === view.gen ? kept.k : kOf(view.threshold);
      this.range.value = tText(this.k);
      POSITIONS.set(view.key, { k: this.k, gen: this.gen });
      if (!first) this.redraw();
    }
    if (!this.payload || this.payload.id !== data.payload.id) {
      this.payload = data.payload;
      this.configurePanels();
      this.load(data.payload);
    } else if (restyle) {
      this.configurePanels();
      this.scheduleLayout();
    }
  }

  configurePanels() {
    const p = this.payload;
    const hasTruth = !!p.truth_png;
    const wanted = hasTruth ? [this.pOverlay, this.pErrors, this.pCurve] : [this.pOverlay];
    if (this.panels.children.length !== wanted.length
      || wanted.some((w, i) => this.panels.children[i] !== w)) {
      this.panels.replaceChildren(...wanted);
    }
    this.panels.style.setProperty("--tv-cols", String(wanted.length));
    this.metricsBox.hidden = !hasTruth;
    this.overlayTitle.textContent = this.view.title || "Prediction";
    const c = p.colors;
    const fill = this.view.style !== "contour";
    const legend = [`${c.pred_name} = predicted mask (${fill ? "filled" : "outlined inside"})`];
    if (hasTruth && this.view.show_truth) legend.push(`${c.truth_name} = true mask (outlined outside)`);
    this.overlayLegend.replaceChildren();
    legend.forEach((text, i) => {
      const item = el("span", { class: "tv-key" });
      const sw = el("span", { class: "tv-swatch", "aria-hidden": "true" });
      sw.style.background = i === 0 ? c.pred : c.truth;
      item.append(sw, document.createTextNode(text));
      this.overlayLegend.append(item);
    });
  }

  async load(payload) {
    const token = this.loadToken = {};
    this.root.dataset.ready = "0";
    try {
      const [img, lev, tru] = await Promise.all([
        decodePng(payload.image_png), decodePng(payload.level_png),
        payload.truth_png ? decodePng(payload.truth_png) : Promise.resolve(null)]);
      if (token !== this.loadToken) return;
      const n = lev.w * lev.h;
      const level = redChannel(lev.rgba, n);
      const hist = new Array(N_T + 1).fill(0);
      for (let i = 0; i < n; i++) hist[level[i]]++;
      const fgAbove = new Array(N_T).fill(0); // display pixels with level > k
      let acc = 0;
      for (let k = N_T - 1; k >= 0; k--) { acc += hist[k + 1]; fgAbove[k] = acc; }
      let truth = null;
      if (tru) {
        truth = new Uint8Array(n);
        for (let i = 0; i < n; i++) truth[i] = tru.rgba[4 * i] > 127 ? 1 : 0;
      }
      this.decoded = { id: payload.id, w: lev.w, h: lev.h, level, truth, fgAbove,
        imageCanvas: img.canvas };
      this.root.dataset.levelHist = JSON.stringify(hist);
      this.layout = null;
      this.relayout();
      this.root.dataset.ready = "1";
    } catch (err) {
      this.root.dataset.ready = "error";
      this.caption.textContent = `Could not draw the threshold view: ${err}`;
    }
  }

  // ---------------------------------------------------------------- events

  onInput() {
    const k = kOf(this.range.value);
    if (k === this.k && this.layout) return;
    this.k = k;
    this.redraw();
  }

  onChange() {
    this.onInput();
    const k = this.k;
    if (this.view) POSITIONS.set(this.view.key, { k, gen: this.gen });
    const byKey = performance.now() - this.lastKey < 250;
    clearTimeout(this.sendTimer);
    this.pendingSend = () => {
      this.sendTimer = null;
      this.pendingSend = null;
      this.setStateValue("release", { t: k / 100, n: `${Date.now()}-${Math.random()}` });
    };
    this.sendTimer = setTimeout(this.pendingSend, byKey ? KEY_IDLE_MS : SEND_DELAY_MS);
  }

  downloadMask() {
    const p = this.payload, view = this.view, d = this.decoded;
    if (!p || !view || !d || p.stride !== 1) return;
    const k = this.k;
    const emptied = view.min_area > 0 && p.counts[k] < view.min_area;
    const c = document.createElement("canvas");
    c.width = d.w;
    c.height = d.h;
    const ctx = c.getContext("2d");
    const img = ctx.createImageData(d.w, d.h);
    const px = img.data, lv = d.level;
    for (let i = 0; i < lv.length; i++) {
      const v = !emptied && lv[i] > k ? 255 : 0;
      px[4 * i] = v; px[4 * i + 1] = v; px[4 * i + 2] = v; px[4 * i + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
    const name = `${view.file_stem || "image"}_mask_t${(k / 100).toFixed(2)}.png`;
    c.toBlob((blob) => {
      const a = document.createElement("a");
      a.href = URL.createObjectURL(blob);
      a.download = name;
      this.root.dataset.lastDownload = name;
      a.click();
      setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    }, "image/png");
  }

  flushSend() {
    if (!this.pendingSend) return;
    clearTimeout(this.sendTimer);
    this.pendingSend();
  }

  scheduleLayout() {
    if (this.layoutPending) return;
    this.layoutPending = true;
    requestAnimationFrame(() => {
      this.layoutPending = false;
      this.relayout();
    });
  }

  // ---------------------------------------------------------------- layout (per size)

  relayout() {
    const d = this.decoded;
    if (!d || !this.view || !this.root.isConnected) return;
    const width = this.root.clientWidth;
    this.root.classList.toggle("tv-narrow", width > 0 && width < NARROW_PX);
    const panelW = Math.max(80, this.pOverlay.clientWidth || 300);
    const dpr = Math.min(window.devicePixelRatio || 1, 2);
    // Canvas pixels: the panel's device pixels, at most MAX_CANVAS_PX (the browser scales up).
    let cw = Math.max(32, Math.round(panelW * dpr));
    cw = Math.min(cw, Math.floor(Math.sqrt(MAX_CANVAS_PX * d.w / d.h)));
    cw = Math.max(16, cw);
    const ch = Math.max(8, Math.round(cw * d.h / d.w));
    const key = [cw, ch, d.id, panelW, this.lookKey].join("|");
    if (this.layout && this.layout.key === key) { this.redraw(); return; }

    const n = cw * ch;
    const sx = new Int32Array(cw), sy = new Int32Array(ch);
    for (let x = 0; x < cw; x++) sx[x] = Math.min(d.w - 1, Math.floor((x + 0.5) * d.w / cw));
    for (let y = 0; y < ch; y++) sy[y] = Math.min(d.h - 1, Math.floor((y + 0.5) * d.h / ch));
    const level = new Uint8Array(n);
    const truth = d.truth ? new Uint8Array(n) : null;
    for (let y = 0, i = 0; y < ch; y++) {
      const row = sy[y] * d.w;
      for (let x = 0; x < cw; x++, i++) {
        level[i] = d.level[row + sx[x]];
        if (truth) truth[i] = d.truth[row + sx[x]];
      }
    }
    // The image at canvas size: smoothed when shrinking, pixelated when enlarging.
    const tmp = document.createElement("canvas");
    tmp.width = cw; tmp.height = ch;
    const tctx = tmp.getContext("2d", { willReadFrequently: true });
    tctx.imageSmoothingEnabled = cw < d.w;
    tctx.imageSmoothingQuality = "high";
    tctx.drawImage(d.imageCanvas, 0, 0, cw, ch);
    const base = tctx.getImageData(0, 0, cw, ch);
    const base32 = new Uint32Array(base.data.buffer.slice(0));
    const colors = this.payload.colors;
    const lay = {
      key, cw, ch, n, level, truth, base32,
      fill: tinted(base32, colors.pred, this.view.opacity),
      predColor: pack(...hexToRgb(colors.pred)),
      truthColor: pack(...hexToRgb(colors.truth)),
    };
    if (truth) {
      lay.tp = tinted(base32, COLORS.tp, 0.6);
      lay.fp = tinted(base32, COLORS.fp, 0.7);
      lay.fn = tinted(base32, COLORS.fn, 0.7);
      lay.truthOutline = outerOutline(truth, cw, ch, 2);
    }
    for (const c of [this.cOverlay, this.cErrors]) {
      c.width = cw; c.height = ch;
    }
    lay.overlayCtx = this.cOverlay.getContext("2d");
    lay.overlayImg = lay.overlayCtx.createImageData(cw, ch);
    lay.overlay32 = new Uint32Array(lay.overlayImg.data.buffer);
    if (truth) {
      lay.errorsCtx = this.cErrors.getContext("2d");
      lay.errorsImg = lay.errorsCtx.createImageData(cw, ch);
      lay.errors32 = new Uint32Array(lay.errorsImg.data.buffer);
    }
    this.layout = lay;
    if (this.payload.metrics) this.buildCurve(panelW, Math.round(panelW * d.h / d.w));
    this.redraw();
  }

  // ---------------------------------------------------------------- per move

  redraw() {
    const lay = this.layout, p = this.payload, view = this.view;
    if (!lay || !p || !view) return;
    const t0 = performance.now();
    const k = this.k;
    const count = p.counts[k];
    const emptied = view.min_area > 0 && count < view.min_area;
    const { cw, ch, level, truth, base32 } = lay;
    const out = lay.overlay32, fill = lay.fill, predColor = lay.predColor;
    // Predicted mask at grid index k: level > k (exact), emptied by the minimum-area rule.
    const thr = emptied ? 255 : k;
    const contour = view.style === "contour";
    const e = truth ? lay.errors32 : null, tp = lay.tp, fp = lay.fp, fn = lay.fn;
    // One pass: overlay (fill + 1 px edge, or a 2 px contour inside the mask; the image border
    // counts as background) and error map.
    const r = contour ? 2 : 1;
    const w2 = 2 * cw;
    for (let y = 0, i = 0; y < ch; y++) {
      const yBorder = y < r || y >= ch - r;
      for (let x = 0; x < cw; x++, i++) {
        const b = base32[i];
        if (level[i] <= thr) {
          out[i] = b;
          if (e) e[i] = truth[i] ? fn[i] : b;
          continue;
        }
        let edge = yBorder || x < r || x >= cw - r
          || level[i - 1] <= thr || level[i + 1] <= thr
          || level[i - cw] <= thr || level[i + cw] <= thr;
        if (!edge && r === 2) {
          edge = level[i - 2] <= thr || level[i + 2] <= thr || level[i - w2] <= thr
            || level[i + w2] <= thr || level[i - cw - 1] <= thr || level[i - cw + 1] <= thr
            || level[i + cw - 1] <= thr || level[i + cw + 1] <= thr;
        }
        out[i] = edge ? predColor : (contour ? b : fill[i]);
        if (e) e[i] = truth[i] ? tp[i] : fp[i];
      }
    }
    if (truth && view.show_truth) {
      const o = lay.truthOutline, c = lay.truthColor;
      for (let j = 0; j < o.length; j++) out[o[j]] = c;
    }
    lay.overlayCtx.putImageData(lay.overlayImg, 0, 0);
    if (e) lay.errorsCtx.putImageData(lay.errorsImg, 0, 0);
    this.updateTexts(k, count, emptied);
    if (p.metrics) this.updateCurve(k);
    const t1 = performance.now();
    this.redraws++;
    const ds = this.root.dataset;
    ds.k = String(k);
    ds.threshold = tText(k);
    ds.redrawMs = (t1 - t0).toFixed(3);
    ds.redrawAt = t1.toFixed(3);
    ds.redraws = String(this.redraws);
    ds.displayFg = String(emptied ? 0 : this.decoded.fgAbove[k]);
  }

  updateTexts(k, count, emptied) {
    const p = this.payload, view = this.view;
    const t = tText(k);
    this.valueText.textContent = t;
    this.range.setAttribute("aria-valuetext", t);
    if (kOf(this.range.value) !== k) this.range.value = t;
    const total = p.height * p.width;
    let text = `Mask at ${t} · ${pct1(emptied ? 0 : count / total)} foreground`;
    if (emptied && count > 0) {
      text += ` · emptied: fewer than ${view.min_area} px above the threshold`;
    }
    if (p.stride > 1) text += ` · shown every ${p.stride} px`;
    this.caption.textContent = text;
    this.errorsTitle.textContent = `Errors at ${t}`;
    if (p.metrics) {
      for (const [key] of METRICS) this.metricEls[key].textContent = fmt3(p.metrics[key][k]);
    }
    this.metricEls.tgs.parentElement.hidden = view.show_tgs === false;
    this.downloadBtn.hidden = p.stride !== 1;
  }

  // ---------------------------------------------------------------- curve (SVG)

  buildCurve(panelW, imageH) {
    const p = this.payload, view = this.view;
    const W = Math.max(220, panelW);
    const H = Math.round(Math.min(420, Math.max(240, imageH, W * 0.7)));
    const fontPx = parseFloat(getComputedStyle(this.root).fontSize) || 14;
    const small = Math.round(fontPx * 0.8);
    const rowH = Math.ceil(small * 1.5);
    const m = { l: small * 3 + 10, r: 10, t: 6, b: small * 2 + 16 };
    const band = 3 * rowH + 6; // label rows at the top of the plot, above y = 1
    const fx0 = m.l, fx1 = W - m.r, fy0 = m.t, fy1 = H - m.b;
    const y1 = fy0 + band;     // y = 1
    const X = (t) => fx0 + t * (fx1 - fx0);
    const Y = (v) => fy1 - v * (fy1 - y1);
    const svg = this.svg;
    svg.replaceChildren();
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.setAttribute("width", String(W));
    svg.setAttribute("height", String(H));
    svg.style.fontSize = `${small}px`;
    const g = svgEl("g", { class: "tv-axes" });
    g.append(svgEl("rect", { x: fx0, y: fy0, width: fx1 - fx0, height: fy1 - fy0,
      class: "tv-frame" }));
    for (const v of [0, 0.25, 0.5, 0.75, 1]) {
      g.append(svgEl("line", { x1: fx0, x2: fx1, y1: Y(v), y2: Y(v), class: "tv-grid" }));
      g.append(svgEl("text", { x: fx0 - 4, y: Y(v), class: "tv-tick",
        "text-anchor": "end", "dominant-baseline": "middle" }, v === 0 || v === 1 ? String(v) : v.toFixed(2)));
    }
    for (const t of [0, 0.25, 0.5, 0.75, 1]) {
      g.append(svgEl("line", { x1: X(t), x2: X(t), y1: fy1, y2: fy1 + 4, class: "tv-axis" }));
      g.append(svgEl("text", { x: X(t), y: fy1 + 6 + small * 0.8, class: "tv-tick",
        "text-anchor": t === 0 ? "start" : t === 1 ? "end" : "middle" },
        t === 0 || t === 1 ? String(t) : t.toFixed(2)));
    }
    g.append(svgEl("text", { x: (fx0 + fx1) / 2, y: H - 4, class: "tv-axis-label",
      "text-anchor": "middle" }, "Threshold"));
    g.append(svgEl("text", { x: 0, y: 0, class: "tv-axis-label", "text-anchor": "middle",
      transform: `translate(${small + 2} ${(y1 + fy1) / 2}) rotate(-90)` }, "Score"));
    svg.append(g);
    const th = p.thresholds;
    for (const [key, dash] of [["iou", ""], ["dice", "6 4"]]) {
      const pts = p.metrics[key].map((v, i) => `${X(th[i]).toFixed(1)},${Y(v).toFixed(1)}`);
      svg.append(svgEl("polyline", { points: pts.join(" "), fill: "none", stroke: COLORS[key],
        "stroke-width": 2.5, "stroke-dasharray": dash, "stroke-linejoin": "round",
        "data-series": key }));
    }
    const markers = svgEl("g", { class: "tv-markers" });
    const mk = (cls, stroke, dash, width) => {
      const line = svgEl("line", { y1: fy0, y2: fy1, stroke, "stroke-width": width,
        "stroke-dasharray": dash, class: cls });
      markers.append(line);
      return line;
    };
    const bestK = p.best_index;
    const cardK = kOf(view.card_threshold);
    this.curve = {
      X, Y, fx0, fx1, fy0, rowH, small, bestK, cardK,
      card: mk("tv-card", COLORS.card, "2 3", 1.5),
      best: bestK === null ? null : mk("tv-best", COLORS.best, "6 3", 1.5),
      now: mk("tv-now", "currentColor", "", 2),
      dotIou: svgEl("circle", { r: 4, fill: COLORS.iou, class: "tv-dot" }),
      dotDice: svgEl("circle", { r: 4, fill: "none", stroke: COLORS.dice, "stroke-width": 2,
        class: "tv-dot" }),
      labels: svgEl("g", { class: "tv-labels" }),
    };
    const c = this.curve;
    c.card.setAttribute("x1", X(cardK / 100)); c.card.setAttribute("x2", X(cardK / 100));
    if (c.best) { c.best.setAttribute("x1", X(bestK / 100)); c.best.setAttribute("x2", X(bestK / 100)); }
    svg.append(markers, c.dotIou, c.dotDice, c.labels);
    this.textWidths = new Map();
    this.fontFamily = getComputedStyle(this.root).fontFamily;
  }

  textWidth(s, bold) { // canvas measureText (no layout), with a margin for the SVG's rendering
    const key = (bold ? "b:" : "n:") + s;
    let w = this.textWidths.get(key);
    if (w === undefined) {
      this.measureCtx.font = `${bold ? 600 : 400} ${this.curve.small}px ${this.fontFamily}`;
      w = Math.ceil(this.measureCtx.measureText(s).width * 1.06) + 2;
      this.textWidths.set(key, w);
    }
    return w;
  }

  updateCurve(k) {
    const c = this.curve, p = this.payload;
    if (!c) return;
    const x = c.X(k / 100);
    c.now.setAttribute("x1", x); c.now.setAttribute("x2", x);
    c.dotIou.setAttribute("cx", x); c.dotIou.setAttribute("cy", c.Y(p.metrics.iou[k]));
    c.dotDice.setAttribute("cx", x); c.dotDice.setAttribute("cy", c.Y(p.metrics.dice[k]));
    // Labels: one per distinct position ("now = best 0.43"), staggered in rows at the top.
    const groups = new Map();
    const add = (kk, name, cls) => {
      if (!groups.has(kk)) groups.set(kk, { k: kk, names: [], cls });
      groups.get(kk).names.push(name);
    };
    add(k, "now", "tv-now-label");
    if (c.bestK !== null) add(c.bestK, "best", "tv-best-label");
    add(c.cardK, this.view.card_label || "card", "tv-card-label");
    const lineXs = [...groups.values()].map((g) => c.X(g.k / 100));
    const items = [...groups.values()].sort((a, b) => a.k - b.k).map((g) => {
      const text = `${g.names.join(" = ")} ${tText(g.k)}`;
      const w = this.textWidth(text, g.names.includes("now"));
      const gx = c.X(g.k / 100);
      // Right or left of its own line: the side that crosses fewer other marker lines and
      // stays inside the plot; ties: "now" to the right, the others away from "now".
      const outer = g.names.includes("now") || g.k >= k ? 1 : -1;
      let best = null;
      for (const side of [outer, -outer]) {
        const x0 = side > 0 ? gx + 4 : gx - 4 - w;
        const x1 = x0 + w;
        const crossings = lineXs.filter((lx) => lx !== gx && lx > x0 - 2 && lx < x1 + 2).length;
        const outside = x0 < c.fx0 + 2 || x1 > c.fx1 - 2 ? 100 : 0;
        const score = outside + crossings + (side === outer ? 0 : 0.5);
        if (best === null || score < best.score) best = { score, x0 };
      }
      const x0 = Math.max(c.fx0 + 2, Math.min(best.x0, c.fx1 - 2 - w));
      return { text, x0, x1: x0 + w, cls: g.cls };
    });
    const rows = [];
    c.labels.replaceChildren();
    for (const it of items) {
      let r = 0;
      while (rows[r] && rows[r].some(([a, b]) => it.x0 < b + 6 && a < it.x1 + 6)) r++;
      (rows[r] = rows[r] || []).push([it.x0, it.x1]);
      const y = c.fy0 + 3 + (r + 0.8) * c.rowH;
      c.labels.append(svgEl("text", { x: it.x0.toFixed(1), y: y.toFixed(1),
        class: `tv-marker-label ${it.cls}` }, it.text));
    }
  }

  destroy() {
    clearTimeout(this.sendTimer);
    if (document.fonts) document.fonts.removeEventListener("loadingdone", this.onFonts);
    this.resizeObserver.disconnect();
    this.root.remove();
  }
}

// Indices of background pixels within `width` 4-neighbour steps of the mask (outline outside).
function outerOutline(mask, w, h, width) {
  let ring = new Uint8Array(mask);
  const out = [];
  for (let s = 0; s < width; s++) {
    const next = new Uint8Array(ring);
    for (let y = 0, i = 0; y < h; y++) {
      for (let x = 0; x < w; x++, i++) {
        if (ring[i]) continue;
        if ((x > 0 && ring[i - 1]) || (x < w - 1 && ring[i + 1])
          || (y > 0 && ring[i - w]) || (y < h - 1 && ring[i + w])) {
          next[i] = 1;
          out.push(i);
        }
      }
    }
    ring = next;
  }
  return Int32Array.from(out);
}

export default function (component) {
  const { data, parentElement, setStateValue } = component;
  let inst = STATE.get(parentElement);
  if (!inst) {
    inst = new ThresholdView(parentElement);
    STATE.set(parentElement, inst);
  }
  inst.setStateValue = setStateValue;
  inst.update(data);
  return () => {
    inst.destroy();
    STATE.delete(parentElement);
  };
}
