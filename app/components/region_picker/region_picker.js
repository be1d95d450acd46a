// Region picker: a Streamlit Custom Component (v2) that shows an image and lets the user pick a
// region of it: a click picks one pixel, a drag picks a box. Coordinates are IMAGE pixels
// (the full-resolution image's), whatever the display scaling or decimation of the picture.
//
// Python (app/components/region_picker.py) sends data = {image_png, width, height, region,
// title, caption, key}:
//   image_png: base64 PNG of the picture (possibly every k-th pixel of the image);
//   width, height: the full image's size in pixels (what coordinates refer to);
//   region: {kind: "pixel"|"box"|other, x, y, box: [x0, y0, x1, y1] (x1/y1 exclusive)} drawn
//           as a vector outline (a pixel's square and cross hair, a box's rectangle).
// A pick sends the state value {pick: {kind, x, y, box, n}} (n: a fresh nonce per pick) to
// Python, which writes it into the number inputs and reruns.
//
// Test hooks: [data-testid="rp-root"] carries data-ready ("1" once the image is drawn),
// data-picks (count) and data-last-pick (JSON of the last pick sent).

const STATE = new WeakMap(); // parentElement -> instance
const SVG_NS = "http://www.w3.org/2000/svg";
const DRAG_PX = 4; // a move of fewer screen pixels than this is a click

function el(tag, attrs = {}, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function svgEl(tag, attrs = {}) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}

class RegionPicker {
  constructor(parent) {
    this.parent = parent;
    this.data = null;
    this.drag = null;
    this.picks = 0;
    this.setStateValue = () => {};
    this.build();
  }

  build() {
    const root = this.root = el("div", { class: "rp", "data-testid": "rp-root",
      "data-ready": "0", "data-picks": "0" });
    this.title = el("p", { class: "rp-title" });
    const stage = this.stage = el("div", { class: "rp-stage" });
    this.img = el("img", { class: "rp-img", alt: "", draggable: "false" });
    this.svg = svgEl("svg", { class: "rp-svg", preserveAspectRatio: "none",
      "aria-hidden": "true" });
    this.regionLayer = svgEl("g", { class: "rp-region" });
    this.rubber = svgEl("rect", { class: "rp-rubber", visibility: "hidden" });
    this.svg.append(this.regionLayer, this.rubber);
    stage.append(this.img, this.svg);
    this.readout = el("p", { class: "rp-readout", "aria-live": "polite" });
    this.caption = el("p", { class: "rp-caption" });
    root.append(this.title, stage, this.readout, this.caption);
    this.parent.append(root);
    stage.addEventListener("pointerdown", (e) => this.onDown(e));
    stage.addEventListener("pointermove", (e) => this.onMove(e));
    stage.addEventListener("pointerup", (e) => this.onUp(e));
    stage.addEventListener("pointercancel", () => this.cancel());
    stage.addEventListener("pointerleave", (e) => { if (!this.drag) this.hover(null); else this.onMove(e); });
    this.img.addEventListener("load", () => { this.root.dataset.ready = "1"; });
  }

  update(data) {
    const first = !this.data || this.data.image_png !== data.image_png;
    this.data = data;
    this.title.textContent = data.title || "";
    this.title.hidden = !data.title;
    this.caption.textContent = data.caption || "";
    const W = data.width, H = data.height;
    this.svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    this.stage.style.aspectRatio = `${W} / ${H}`;
    // Small pictures shown enlarged: keep their pixels square and sharp.
    this.img.classList.toggle("rp-pixelated", data.display_width * 2 <= 900);
    if (first) {
      this.root.dataset.ready = "0";
      this.img.src = `data:image/png;base64,${data.image_png}`;
      if (this.img.complete && this.img.naturalWidth) this.root.dataset.ready = "1";
    }
    this.drawRegion(data.region);
    if (!this.drag) this.hover(null);
  }

  // Image pixel (column, row) under a pointer event, clamped to the image.
  pixelOf(e) {
    const r = this.stage.getBoundingClientRect();
    const W = this.data.width, H = this.data.height;
    const fx = (e.clientX - r.left) / Math.max(r.width, 1);
    const fy = (e.clientY - r.top) / Math.max(r.height, 1);
    return {
      x: Math.min(W - 1, Math.max(0, Math.floor(fx * W))),
      y: Math.min(H - 1, Math.max(0, Math.floor(fy * H))),
      sx: e.clientX, sy: e.clientY,
    };
  }

  onDown(e) {
    if (!this.data || e.button !== 0) return;
    e.preventDefault();
    this.stage.setPointerCapture && this.stage.setPointerCapture(e.pointerId);
    const p = this.pixelOf(e);
    this.drag = { start: p, now: p, moved: false };
  }

  onMove(e) {
    if (!this.data) return;
    const p = this.pixelOf(e);
    if (!this.drag) { this.hover(p); return; }
    this.drag.now = p;
    const d = this.drag;
    if (Math.abs(p.sx - d.start.sx) >= DRAG_PX || Math.abs(p.sy - d.start.sy) >= DRAG_PX) {
      d.moved = true;
    }
    if (d.moved) {
      const b = boxOf(d.start, p);
      setRect(this.rubber, b);
      this.rubber.setAttribute("visibility", "visible");
      this.readout.textContent = `box x ${b[0]}–${b[2] - 1}, y ${b[1]}–${b[3] - 1} ` +
        `(${b[2] - b[0]}×${b[3] - b[1]} px): release to use it`;
    }
  }

  onUp(e) {
    const d = this.drag;
    if (!d || !this.data) return;
    const p = this.pixelOf(e);
    this.drag = null;
    this.rubber.setAttribute("visibility", "hidden");
    let pick;
    if (d.moved || Math.abs(p.sx - d.start.sx) >= DRAG_PX || Math.abs(p.sy - d.start.sy) >= DRAG_PX) {
      const b = boxOf(d.start, p);
      pick = { kind: "box", box: b, x: null, y: null };
      this.drawRegion({ kind: "box", box: b });
    } else {
      pick = { kind: "pixel", x: d.start.x, y: d.start.y, box: null };
      this.drawRegion({ kind: "pixel", x: d.start.x, y: d.start.y });
    }
    pick.n = `${Date.now()}-${Math.random().toString(36).slice(2)}`;
    this.picks++;
    this.root.dataset.picks = String(this.picks);
    this.root.dataset.lastPick = JSON.stringify(pick);
    this.readout.textContent = pick.kind === "box"
      ? `picked box x ${pick.box[0]}–${pick.box[2] - 1}, y ${pick.box[1]}–${pick.box[3] - 1}`
      : `picked pixel (${pick.x}, ${pick.y})`;
    this.setStateValue("pick", pick);
  }

  cancel() {
    this.drag = null;
    this.rubber.setAttribute("visibility", "hidden");
  }

  hover(p) {
    if (!this.data) return;
    this.readout.textContent = p ? `pixel (${p.x}, ${p.y}) · click: this pixel · drag: a box`
      : "Click a pixel or drag a box on the image.";
  }

  drawRegion(region) {
    const g = this.regionLayer;
    g.replaceChildren();
    if (!region) return;
    if (region.kind === "box" && Array.isArray(region.box)) {
      const b = region.box;
      g.append(svgEl("rect", { x: b[0], y: b[1], width: Math.max(0, b[2] - b[0]),
        height: Math.max(0, b[3] - b[1]), class: "rp-halo" }));
      g.append(svgEl("rect", { x: b[0], y: b[1], width: Math.max(0, b[2] - b[0]),
        height: Math.max(0, b[3] - b[1]), class: "rp-box" }));
    } else if ((region.kind === "pixel" || region.kind === "component")
      && Number.isInteger(region.x) && Number.isInteger(region.y)) {
      const W = this.data.width, H = this.data.height, x = region.x, y = region.y;
      const cx = x + 0.5, cy = y + 0.5;
      for (const cls of ["rp-halo", "rp-cross"]) {
        g.append(svgEl("line", { x1: 0, x2: W, y1: cy, y2: cy, class: cls }));
        g.append(svgEl("line", { x1: cx, x2: cx, y1: 0, y2: H, class: cls }));
      }
      g.append(svgEl("rect", { x, y, width: 1, height: 1, class: "rp-pixel" }));
    }
  }

  destroy() { this.root.remove(); }
}

// Box (x0, y0, x1, y1), x1/y1 exclusive, covering the pixels of two corners.
function boxOf(a, b) {
  return [Math.min(a.x, b.x), Math.min(a.y, b.y), Math.max(a.x, b.x) + 1, Math.max(a.y, b.y) + 1];
}

function setRect(rect, b) {
  rect.setAttribute("x", b[0]);
  rect.setAttribute("y", b[1]);
  rect.setAttribute("width", b[2] - b[0]);
  rect.setAttribute("height", b[3] - b[1]);
}

export default function (component) {
  const { data, parentElement, setStateValue } = component;
  let inst = STATE.get(parentElement);
  if (!inst) {
    inst = new RegionPicker(parentElement);
    STATE.set(parentElement, inst);
  }
  inst.setStateValue = setStateValue;
  inst.update(data);
  return () => {
    inst.destroy();
    STATE.delete(parentElement);
  };
}
