"""ComfyUI starts with this pack linked in, serves /object_info, and runs a graph on the random checkpoint."""

from __future__ import annotations

import re

PACK_PATH = re.compile(r"custom_nodes[/\\]ComfyUI-Latent3D\s*$")


def test_server_loads_the_pack(comfy_server) -> None:
    info = comfy_server.object_info()
    assert "CheckpointLoaderSimple" in info and "KSampler" in info
    log = comfy_server.log()
    pack_lines = [line for line in log.splitlines() if PACK_PATH.search(line)]
    assert pack_lines, f"the pack is not in ComfyUI's custom node import list:\n{comfy_server.log_tail()}"
    assert not any("IMPORT FAILED" in line for line in pack_lines), "\n".join(pack_lines)
    assert "ComfyUI-Latent3D module for custom nodes" not in log  # "Cannot import …" / "Skip …"
    assert "comfy_entrypoint in" not in log  # V3 entry point warnings
    assert any(ckpt == "latent3d_random_sd15.safetensors" for ckpt in info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0])


def test_server_runs_a_graph_on_the_random_checkpoint(comfy_server) -> None:
    """One sampler step at a 64×64 image through the HTTP client (queue, poll history)."""
    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "latent3d_random_sd15.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a chair"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0], "seed": 0,
            "steps": 1, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}},
    }  # fmt: skip
    entry = comfy_server.wait(comfy_server.queue(graph), timeout=300)
    assert entry["status"]["status_str"] == "success", entry["status"]
    images = entry["outputs"]["7"]["images"]
    assert len(images) == 1 and images[0]["type"] == "temp"
    assert "model_type EPS" in comfy_server.log()
    comfy_server.interrupt()  # nothing running: still answered
