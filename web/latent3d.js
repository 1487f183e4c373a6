// ComfyUI-Latent3D: a live panel on the training nodes (status with ETA, warnings, loss curve, preview frames).
//
// Fed only by the node's own "latent3d.progress" messages and its UI output (a finished or cached run's
// summary; see nodes/progress.py); loads nothing from a CDN, adds no server route, and leaves 3D viewing
// to core Preview3D. Hand-added training nodes start with the seed control on "fixed": re-queueing the same
// inputs then resumes the run instead of starting a new one (saved workflows keep their own value).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const TRAINING_NODES = new Set(["Latent3DLatentNeRFTrain", "Latent3DLatentPaint", "Latent3DLatentToRGBRefine"]);
const UI_KEY = "latent3d";
const MAX_FRAMES = 48;
const PANEL_HEIGHT = 250;

function formatDuration(seconds) {
  if (!Number.isFinite(seconds)) return "";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 90 * 60) return `${Math.round(seconds / 60)} min`;
  if (seconds < 48 * 3600) {
    const minutes = Math.round(seconds / 60);
    return `${Math.floor(minutes / 60)} h ${String(minutes % 60).padStart(2, "0")} min`;
  }
  return `${(seconds / 86400).toFixed(1)} days`;
}

function el(tag, style = {}, attrs = {}) {
  const node = document.createElement(tag);
  Object.assign(node.style, style);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

class TrainingPanel {
  constructor() {
    this.losses = []; // [step, loss]
    this.frames = []; // {step, src}
    this.frameIndex = -1;
    this.playing = false;
    this.timer = null;
    this.root = el("div", { display: "flex", flexDirection: "column", gap: "4px", width: "100%", height: "100%",
      font: "11px sans-serif", color: "var(--input-text, #ddd)", boxSizing: "border-box", padding: "2px" },
      { "data-latent3d-panel": "" });
    this.status = el("div", { whiteSpace: "nowrap", overflow: "hidden", textOverflow: "ellipsis" }, { "data-role": "status" });
    this.status.textContent = "Latent3D: waiting for a run";
    // warnings (slow device, sketch problems, skipped steps): amber, scrolled inside the panel so the node keeps its size
    this.warnings = el("div", { maxHeight: "3.6em", overflowY: "auto", color: "#f0b860", whiteSpace: "pre-wrap", display: "none" },
      { "data-role": "warnings" });
    const row = el("div", { display: "flex", gap: "4px", flex: "1", minHeight: "0" });
    this.canvas = el("canvas", { flex: "1", minWidth: "0", height: "100%", background: "rgba(0,0,0,0.25)", borderRadius: "4px" },
      { "data-role": "loss" });
    // hidden until the first frame: an <img> without src draws a broken-image border
    this.image = el("img", { height: "100%", aspectRatio: "1", objectFit: "contain", background: "rgba(0,0,0,0.25)", borderRadius: "4px",
      visibility: "hidden" }, { "data-role": "frame", alt: "" });
    row.append(this.canvas, this.image);
    const controls = el("div", { display: "flex", gap: "4px", alignItems: "center" });
    this.play = el("button", { fontSize: "11px", padding: "0 6px" }, { "data-role": "play", type: "button" });
    this.play.textContent = "▶";
    this.play.onclick = () => this.toggle();
    this.slider = el("input", { flex: "1" }, { type: "range", min: "0", max: "0", value: "0", "data-role": "scrub" });
    this.slider.oninput = () => { this.stop(); this.show(Number(this.slider.value)); };
    this.frameLabel = el("span", { minWidth: "5em", textAlign: "right" }, { "data-role": "frame-label" });
    controls.append(this.play, this.slider, this.frameLabel);
    this.root.append(this.status, this.warnings, row, controls);
  }

  update(detail) {
    if (detail.reset) {
      this.stop();
      this.losses = []; this.frames = []; this.frameIndex = -1;
      this.slider.max = "0"; this.frameLabel.textContent = "";
    }
    for (const point of detail.losses ?? []) this.losses.push(point);
    if (this.losses.length > 5000) this.losses = this.losses.filter((_, i) => i % 2 === 0);
    const frames = detail.frames ?? (detail.frame ? [{ label: `step ${detail.step}`, src: detail.frame }] : []);
    for (const frame of frames) {
      this.frames.push(frame);
      if (this.frames.length > MAX_FRAMES) this.frames.shift();
    }
    if (frames.length) {
      this.slider.max = String(this.frames.length - 1);
      if (!this.playing) this.show(this.frames.length - 1);
    }
    if (detail.warnings) this.setWarnings(detail.warnings);
    if (detail.step === undefined) return; // a warnings-only message
    const last = this.losses.length ? this.losses[this.losses.length - 1][1] : null;
    const parts = [`${detail.state ?? "running"}`, `step ${detail.step}/${detail.total}`];
    if (last !== null) parts.push(`loss ${Number(last).toPrecision(3)}`);
    if (detail.seconds_per_step) parts.push(`${Number(detail.seconds_per_step).toFixed(2)} s/step`);
    if (detail.eta_s && detail.step < detail.total) parts.push(`≈ ${formatDuration(detail.eta_s)} left`);
    if (detail.resumed_from) parts.push(`resumed at ${detail.resumed_from}`);
    if (detail.skipped) parts.push(`${detail.skipped} skipped`);
    this.status.textContent = parts.join(" · ");
    this.status.title = this.status.textContent;
    this.root.dataset.step = String(detail.step);
    this.root.dataset.state = String(detail.state ?? "running");
    this.drawLoss();
  }

  setWarnings(warnings) {
    this.warnings.textContent = warnings.map((w) => `⚠ ${w}`).join("\n");
    this.warnings.style.display = warnings.length ? "block" : "none";
    this.root.dataset.warnings = String(warnings.length);
  }

  show(index) {
    if (!this.frames.length) return;
    this.frameIndex = Math.max(0, Math.min(index, this.frames.length - 1));
    const frame = this.frames[this.frameIndex];
    this.image.src = frame.src;
    this.image.style.visibility = "visible";
    this.slider.value = String(this.frameIndex);
    this.frameLabel.textContent = frame.label ?? "";
  }

  toggle() { this.playing ? this.stop() : this.start(); }

  start() {
    if (this.frames.length < 2) return;
    this.playing = true;
    this.play.textContent = "⏸";
    this.timer = setInterval(() => this.show((this.frameIndex + 1) % this.frames.length), 120);
  }

  stop() {
    this.playing = false;
    this.play.textContent = "▶";
    clearInterval(this.timer);
  }

  drawLoss() {
    const canvas = this.canvas;
    const width = Math.max(50, canvas.clientWidth || 200);
    const height = Math.max(40, canvas.clientHeight || 150);
    if (canvas.width !== width || canvas.height !== height) { canvas.width = width; canvas.height = height; }
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, width, height);
    const points = this.losses.filter(([, v]) => Number.isFinite(v) && v > 0);
    if (points.length < 2) return;
    // log-scale loss with a running mean: SDS losses are noisy by nature
    const logs = points.map(([s, v]) => [s, Math.log10(v)]);
    const window = Math.max(1, Math.floor(logs.length / 20));
    const smooth = logs.map(([s], i) => {
      const part = logs.slice(Math.max(0, i - window), i + 1);
      return [s, part.reduce((a, [, v]) => a + v, 0) / part.length];
    });
    const steps = logs.map(([s]) => s), values = logs.map(([, v]) => v);
    const x0 = Math.min(...steps), x1 = Math.max(...steps);
    const y0 = Math.min(...values), y1 = Math.max(...values);
    const px = (s) => 4 + ((s - x0) / Math.max(1e-9, x1 - x0)) * (width - 8);
    const py = (v) => height - 12 - ((v - y0) / Math.max(1e-9, y1 - y0)) * (height - 20);
    const line = (series, color, lineWidth) => {
      ctx.strokeStyle = color; ctx.lineWidth = lineWidth; ctx.beginPath();
      series.forEach(([s, v], i) => (i ? ctx.lineTo(px(s), py(v)) : ctx.moveTo(px(s), py(v))));
      ctx.stroke();
    };
    line(logs, "rgba(120,160,255,0.35)", 1);
    line(smooth, "rgb(120,200,255)", 2);
    ctx.fillStyle = "rgba(220,220,220,0.8)";
    ctx.fillText(`log10 loss ${y1.toFixed(1)}`, 6, 10);
    ctx.fillText(`${y0.toFixed(1)}`, 6, height - 2);
  }
}

// The executing node's id: "7" on the root graph, "12:7" for node 7 inside the subgraph node 12.
function nodeForId(id) {
  let graph = app.graph, node = null;
  for (const part of String(id).split(":")) {
    node = graph?.getNodeById?.(Number(part)) ?? graph?.getNodeById?.(part);
    graph = node?.subgraph;
  }
  return node;
}

app.registerExtension({
  name: "Latent3D.TrainingPanel",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!TRAINING_NODES.has(nodeData.name)) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      const panel = new TrainingPanel();
      // display only: options.serialize keeps it out of the queued prompt (graphToPrompt), widget.serialize
      // out of the saved workflow's widgets_values
      const widget = this.addDOMWidget("latent3d_panel", "latent3d_panel", panel.root, {
        hideOnZoom: false,
        serialize: false,
        getMinHeight: () => PANEL_HEIGHT,
        getHeight: () => PANEL_HEIGHT,
      });
      widget.serialize = false;
      this.latent3dPanel = panel;
      // a new node's seed control starts on "fixed" (the frontend's default is "randomize"); a loaded
      // workflow's saved value replaces it afterwards
      const seed = this.widgets?.find((w) => w.name === "seed");
      const control = seed?.linkedWidgets?.[0] ?? this.widgets?.find((w) => w.name === "control_after_generate");
      if (control) control.value = "fixed";
      const onRemoved = this.onRemoved;
      this.onRemoved = function () { panel.stop(); return onRemoved?.apply(this, arguments); };
      return result;
    };
    // the run's summary (loss curve, turntable frames, warnings): sent when the node ran, and replayed by
    // ComfyUI when the node's result came from its cache
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      const result = onExecuted?.apply(this, arguments);
      const summary = output?.[UI_KEY]?.[0];
      if (summary) this.latent3dPanel?.update({ ...summary, reset: true });
      return result;
    };
  },
  setup() {
    api.addEventListener("latent3d.progress", ({ detail }) => nodeForId(detail.node)?.latent3dPanel?.update(detail));
  },
});
