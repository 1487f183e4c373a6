"""The example workflows in a real browser (Debian's Chromium driven by Playwright) on a real ComfyUI.

Per example (text to 3D, the sketch-guided one, and painting a mesh): the frontend loads the file and saves
the same widget values and links back; the prompt it queues equals ``workflow_api.workflow_to_api``; during
the run the Latent3D panel on the training node shows the steps, the loss curve and preview frames, the
host adds no preview image of its own and the node keeps its size; at the end core Preview3D fetches the
GLB (the painted mesh for Latent-Paint) and draws it. Then: a fresh page queueing the same graph (all
cached) gets the run's summary in its panel, and a hand-added training node's seed control is "fixed".
Screenshots go to ``test-artifacts/``.

Skipped unless Chromium (``apt-get install chromium``; or ``LATENT3D_CHROMIUM``) and the ``playwright``
Python package are present. Playwright never downloads a browser here: it is pointed at the system one.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from comfy_host import REPO_ROOT, comfyui_root_problem
from examples import PAINT_SKETCH, SKETCH, TEXT_TO_3D, TRAINING, tiny_workflow
from workflow_api import widget_names, workflow_to_api


def chromium_path() -> str | None:
    candidate = os.environ.get("LATENT3D_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    return candidate if candidate and Path(candidate).is_file() else None


def _missing() -> str | None:
    if comfyui_root_problem() is not None:
        return comfyui_root_problem()
    if chromium_path() is None:
        return "Chromium not found (Debian: apt-get install chromium; or set LATENT3D_CHROMIUM)"
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is missing: pip install playwright (never run `playwright install`: the system Chromium is used)"
    return None


pytestmark = [pytest.mark.host, pytest.mark.browser, pytest.mark.skipif(_missing() is not None, reason=_missing() or "")]

ARTIFACTS = REPO_ROOT / "test-artifacts"
VIEWPORT = {"width": 1600, "height": 1000}
# WebGL2 runs on the CPU (SwiftShader) with these; Playwright adds --headless and a fresh profile
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]  # fmt: skip
SETTINGS = {
    "Comfy.TutorialCompleted": True,  # else the template dialog covers the graph
    "Comfy.Minimap.Visible": False,  # clean screenshots
}
RUN_TIMEOUT_S = 420
# seeds unlike the server tests' so that nothing comes from ComfyUI's cache or resumes a finished run
SEEDS = {TEXT_TO_3D: 11, SKETCH: 12, PAINT_SKETCH: 13}
NAMES = tuple(SEEDS)

# every value the panel's data-step takes (polling alone could miss steps on a fast machine)
WATCH_STEPS = """() => {
  const panel = document.querySelector('[data-latent3d-panel]');
  window.latent3dSteps = [];
  new MutationObserver(() => window.latent3dSteps.push(Number(panel.dataset.step)))
    .observe(panel, {attributes: true, attributeFilter: ['data-step']});
}"""
PANEL_STATE = """() => {
  const panel = document.querySelector('[data-latent3d-panel]');
  if (!panel) return null;
  const node = window.app.graph.nodes.find((n) => n.latent3dPanel?.root === panel);
  const canvas = panel.querySelector('canvas[data-role=loss]');
  const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let drawn = 0;
  for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) drawn++;
  const frame = panel.querySelector('img[data-role=frame]');
  return {step: panel.dataset.step ?? null, status: panel.querySelector('[data-role=status]').textContent,
          frame: (frame.getAttribute('src') || '').slice(0, 23), loss_pixels: drawn,
          label: panel.querySelector('[data-role=frame-label]').textContent,
          size: node ? [Math.round(node.size[0]), Math.round(node.size[1])] : null, host_images: node?.imgs?.length ?? 0};
}"""


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS, headless=True)
        yield instance
        instance.close()


@pytest.fixture
def page(browser, comfy_server):
    for key, value in SETTINGS.items():
        comfy_server.request("POST", f"/settings/{key}", value)
    context = browser.new_context(viewport=VIEWPORT)  # fresh storage: the page restores no earlier workflow
    page = context.new_page()
    page.latent3d_errors = []
    page.latent3d_glbs = []
    page.on("pageerror", lambda error: page.latent3d_errors.append(f"{error.message}\n{error.stack}"))
    page.on("response", lambda r: page.latent3d_glbs.append((r.url, r.status)) if "/view" in r.url and ".glb" in r.url else None)
    page.goto(comfy_server.base_url)
    page.wait_for_function("() => window.app?.graph && (window.app.extensions || []).some(e => e.name === 'Latent3D.TrainingPanel')", timeout=90_000)
    yield page
    context.close()


def _image(png: bytes):
    from PIL import Image

    return Image.open(io.BytesIO(png)).convert("RGB")


def _changed_fraction(before, after, threshold: int = 24) -> float:
    import numpy as np

    a, b = np.asarray(before, dtype=np.int16), np.asarray(after, dtype=np.int16)
    if a.shape != b.shape:
        return 1.0
    return float((np.abs(a - b).max(axis=2) > threshold).mean())


def _viewers(page) -> list:
    """Core Preview3D's three.js canvases, left to right."""
    canvases = page.locator("canvas[data-engine^='three.js']").all()
    return sorted(canvases, key=lambda c: c.bounding_box()["x"])


def _same_values(saved: list[Any], ours: list[Any]) -> bool:
    return len(saved) == len(ours) and all(a == b or (isinstance(a, float) and isinstance(b, float) and abs(a - b) < 1e-9) for a, b in zip(saved, ours))


def _check_round_trip(page, workflow: dict[str, Any], object_info: dict[str, Any]) -> None:
    """The frontend saves our widget values and links unchanged, and queues what workflow_to_api gives."""
    saved = page.evaluate("() => window.app.graph.serialize()")
    ours = {node["id"]: node for node in workflow["nodes"]}
    for node in saved["nodes"]:
        expected = ours[node["id"]]
        assert node["type"] == expected["type"]
        assert _same_values(node.get("widgets_values") or [], expected.get("widgets_values") or []), (
            f"node {node['id']} ({node['type']}): the frontend saves {node.get('widgets_values')}, the file has {expected.get('widgets_values')}"
        )
    assert sorted(map(tuple, saved["links"])) == sorted(map(tuple, workflow["links"]))
    queued = page.evaluate("async () => (await window.app.graphToPrompt()).output")
    converted = workflow_to_api(workflow, object_info)
    assert set(queued) == set(converted)
    for key, node in queued.items():
        info = object_info[node["class_type"]]
        known = set(info["input"].get("required", {})) | set(info["input"].get("optional", {}))
        extra = set(node["inputs"]) - known
        if node["class_type"].startswith("Latent3D"):
            assert not extra, f"{node['class_type']} queues inputs its schema lacks: {extra}"  # e.g. the panel's DOM widget
        inputs = {k: v for k, v in node["inputs"].items() if k in known}  # core Preview3D's viewer widget: 'image'
        assert inputs == converted[key]["inputs"], f"node {key}: frontend {inputs} != workflow_api {converted[key]['inputs']}"


def _wait_for_run(page, comfy_server, before: set[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Poll the panel while the queued prompt runs; returns (history entry, panel states seen)."""
    states: list[dict[str, Any]] = []
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        state = page.evaluate(PANEL_STATE)
        if state and (not states or state != states[-1]):
            states.append(state)
        history = comfy_server.request("GET", "/history?max_items=8")
        new = [entry for key, entry in history.items() if key not in before and entry.get("status", {}).get("completed") is not None]
        if new:
            page.wait_for_timeout(500)  # the last websocket messages reach the page
            states.append(page.evaluate(PANEL_STATE))
            return new[0], states
        page.wait_for_timeout(200)
    raise TimeoutError(f"the run did not finish within {RUN_TIMEOUT_S} s; panel: {states[-3:]}")


@pytest.mark.parametrize("name", NAMES)
def test_example_in_the_browser(page, comfy_server, name) -> None:
    object_info = comfy_server.object_info()
    workflow = tiny_workflow(name, object_info, seed=SEEDS[name])
    page.evaluate("async (workflow) => { await window.app.loadGraphData(workflow) }", workflow)
    page.wait_for_timeout(1000)
    _check_round_trip(page, workflow, object_info)

    viewers = _viewers(page)
    expected_viewers = sum(node["type"] == "Preview3D" for node in workflow["nodes"])
    assert len(viewers) == expected_viewers, f"{len(viewers)} Preview3D canvases for {expected_viewers} nodes"
    empty = [_image(v.screenshot()) for v in viewers]

    page.evaluate(WATCH_STEPS)
    before = set(comfy_server.request("GET", "/history"))
    started = time.monotonic()
    page.evaluate("async () => { await window.app.queuePrompt(0) }")
    entry, states = _wait_for_run(page, comfy_server, before)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000]
    run_s = time.monotonic() - started

    train = next(n for n in workflow["nodes"] if n["type"] in TRAINING)
    total = train["widgets_values"][widget_names(object_info[train["type"]]).index("iterations")]
    steps = page.evaluate("() => window.latent3dSteps")
    assert steps == sorted(steps) and steps[-1] == total, f"panel steps {steps}"
    assert any(0 < step < total for step in steps), f"no intermediate step shown: {steps}"
    final = states[-1]
    assert final["status"].startswith("completed") and f"step {total}/{total}" in final["status"], final
    assert final["frame"].startswith("data:image/jpeg") and final["label"].startswith("turntable"), final
    assert final["loss_pixels"] > 50, "the loss curve was not drawn"
    assert all(s["host_images"] == 0 for s in states), "the host showed a preview image of its own on the training node"
    sizes = {tuple(s["size"]) for s in states if s["size"]}
    assert max(h for _, h in sizes) - min(h for _, h in sizes) <= 80, f"the training node changed its size during the run: {sizes}"

    # Preview3D: the GLB is fetched and drawn (the viewer differs from its empty scene)
    deadline = time.monotonic() + 60
    changed: list[float] = []
    while time.monotonic() < deadline:
        page.wait_for_timeout(1000)
        viewers = _viewers(page)
        changed = [_changed_fraction(e, _image(v.screenshot())) for e, v in zip(empty, viewers)]
        if all(c > 0.02 for c in changed):
            break
    glbs = [url for url, status in page.latent3d_glbs if status == 200]
    wanted = "paint_" if name == PAINT_SKETCH else "mesh_"
    assert any("latent3d" in url and wanted in url for url in glbs), f"Preview3D never fetched the {wanted} GLB: {page.latent3d_glbs}"
    assert all(c > 0.02 for c in changed), f"a Preview3D canvas did not change after the run (changed fractions {changed})"

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
    graph_box = page.locator("canvas.lgraphcanvas").bounding_box()
    page.screenshot(path=str(ARTIFACTS / f"{name}_graph.png"), clip=graph_box)
    for index, viewer in enumerate(_viewers(page)):
        viewer.screenshot(path=str(ARTIFACTS / f"{name}_preview3d_{index}.png"))
    ours = [e for e in page.latent3d_errors if "latent3d" in e.lower()]
    assert not ours, ours
    print(f"{name}: run {run_s:.1f} s, panel steps {sorted(set(steps))}, viewers changed {[round(c, 3) for c in changed]}")


def test_a_cached_run_fills_a_fresh_panel(page, comfy_server) -> None:
    """A page opened after the run (empty panel) queues the same graph: every node comes from ComfyUI's
    cache, and the panel shows the finished run's curve and frames (its summary, replayed by ComfyUI)."""
    object_info = comfy_server.object_info()
    workflow = tiny_workflow(PAINT_SKETCH, object_info, seed=SEEDS[PAINT_SKETCH])
    comfy_server.wait(comfy_server.queue(workflow_to_api(workflow, object_info)), timeout=RUN_TIMEOUT_S)  # ran already, or now
    page.evaluate("async (workflow) => { await window.app.loadGraphData(workflow) }", workflow)
    page.wait_for_timeout(500)
    assert page.evaluate(PANEL_STATE)["status"].startswith("Latent3D: waiting")
    before = set(comfy_server.request("GET", "/history"))
    page.evaluate("async () => { await window.app.queuePrompt(0) }")
    entry, states = _wait_for_run(page, comfy_server, before)
    assert entry["status"]["status_str"] == "success"
    final = states[-1]
    assert final["status"].startswith("completed") and "step 3/3" in final["status"], final
    assert final["frame"].startswith("data:image/jpeg") and final["loss_pixels"] > 50, final


def test_a_new_training_node_keeps_its_seed(page) -> None:
    """The frontend defaults a seed's control to "randomize" (a new run on every queue); ours start "fixed"."""
    controls = page.evaluate("""() => ['Latent3DLatentNeRFTrain', 'Latent3DLatentPaint', 'Latent3DLatentToRGBRefine', 'KSampler'].map((type) => {
      const node = LiteGraph.createNode(type);
      const seed = node.widgets.find((w) => w.name === 'seed');
      return seed.linkedWidgets?.[0]?.value ?? null;
    })""")
    assert controls == ["fixed", "fixed", "fixed", "randomize"], controls
