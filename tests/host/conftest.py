"""Fixtures for tests against a real ComfyUI (``COMFYUI_ROOT``); see comfy_host.py for the variables.

Two kinds of fixture:
- in-process (``comfy``, ``pack``, ``sd15``): ComfyUI's modules imported into this interpreter, for
  adapter-level checks. They skip, with the reason, when this interpreter lacks ComfyUI's requirements.
- ``comfy_server``: ``main.py`` started by ``$COMFYUI_PYTHON`` on a free loopback port, with
  ``--base-directory`` in a temporary folder that holds a link to this pack in ``custom_nodes/`` and a link
  to the random checkpoint in ``models/checkpoints/``. The user's checkout, models, custom nodes, output
  and database are left untouched.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import time
import types
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch

from comfy_host import CHECKPOINT_NAME, REPO_ROOT, checkpoint_path, comfyui_python, comfyui_root, comfyui_root_problem, import_comfy, import_pack

HERE = Path(__file__).resolve().parent
PACK_LINK_NAME = "ComfyUI-Latent3D"
SERVER_START_TIMEOUT_S = 180.0
DEFAULT_SERVER_ARGS = "--cpu --use-pytorch-cross-attention"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    problem = comfyui_root_problem()
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.host)
            if problem is not None:
                item.add_marker(pytest.mark.skip(reason=problem))


# ----------------------------------------------------------------------------------------- in-process


@pytest.fixture(scope="session")
def comfy() -> types.ModuleType:
    """``comfy.model_management``, with ComfyUI importable in this process (CPU unless CUDA is present)."""
    if "OMP_NUM_THREADS" not in os.environ:  # as the server below: one thread unless the caller chose
        torch.set_num_threads(1)
    try:
        return import_comfy()
    except (ImportError, RuntimeError) as e:  # RuntimeError: a torchvision built for another torch
        pytest.skip(
            f"this interpreter ({sys.executable}) cannot import ComfyUI ({type(e).__name__}: {e}); "
            "run the host tests with ComfyUI's python, e.g. `$COMFYUI_PYTHON -m pytest tests/host`"
        )


@pytest.fixture(scope="session")
def pack(comfy: types.ModuleType) -> types.ModuleType:
    """This repository imported as a package, as ComfyUI imports a custom node folder."""
    return import_pack()


@pytest.fixture(scope="session")
def random_checkpoint() -> Path:
    """The random-weight SD1.5 checkpoint, built once (by ``$COMFYUI_PYTHON``) and cached."""
    from make_checkpoint import is_current

    path = checkpoint_path()
    if is_current(path):
        return path
    script = HERE / "make_checkpoint.py"
    result = subprocess.run([comfyui_python(), str(script), "--output", str(path)], capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise RuntimeError(f"{script.name} failed (exit {result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return path


@pytest.fixture(scope="session")
def embeddings_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with one textual-inversion embedding, ``latent3d_test_ti`` (2 random 768-d vectors)."""
    from safetensors.torch import save_file

    directory = tmp_path_factory.mktemp("embeddings")
    generator = torch.Generator().manual_seed(7)
    save_file({"emb_params": torch.randn(2, 768, generator=generator)}, str(directory / "latent3d_test_ti.safetensors"))
    return directory


@pytest.fixture(scope="session")
def sd15(comfy: types.ModuleType, random_checkpoint: Path, embeddings_dir: Path) -> types.SimpleNamespace:
    """(model, clip, vae) of the random checkpoint, loaded by ComfyUI's checkpoint loader under inference
    mode, as a loader node does (so the weights are inference tensors)."""
    import comfy.sd

    with torch.inference_mode():
        model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(
            str(random_checkpoint), output_vae=True, output_clip=True, embedding_directory=[str(embeddings_dir)]
        )
    return types.SimpleNamespace(model=model, clip=clip, vae=vae)


# ------------------------------------------------------------------------------------------- server


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ComfyClient:
    """A minimal HTTP client for one ComfyUI server on loopback (standard library only)."""

    def __init__(self, base_url: str, process: subprocess.Popen, log_path: Path, base_dir: Path) -> None:
        self.base_url = base_url
        self.process = process
        self.log_path = log_path
        self.base_dir = base_dir
        self.client_id = uuid.uuid4().hex
        self.startup_s = 0.0  # seconds from spawning main.py to the first /object_info answer

    def request(self, method: str, path: str, data: Any = None, timeout: float = 30.0) -> Any:
        body = None if data is None else json.dumps(data).encode()
        req = urllib.request.Request(self.base_url + path, data=body, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{method} {path} -> HTTP {e.code}: {e.read().decode(errors='replace')[:2000]}") from e
        return json.loads(payload) if payload else None

    def object_info(self, node_class: str | None = None) -> dict[str, Any]:
        return self.request("GET", "/object_info" + (f"/{node_class}" if node_class else ""))

    def queue(self, prompt: dict[str, Any]) -> str:
        """POST an API-format graph; returns its prompt_id (HTTP 400 with node errors raises)."""
        return self.request("POST", "/prompt", {"prompt": prompt, "client_id": self.client_id})["prompt_id"]

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        return self.request("GET", f"/history/{prompt_id}").get(prompt_id)

    def wait(self, prompt_id: str, timeout: float = 300.0, poll: float = 0.2) -> dict[str, Any]:
        """Poll /history until the prompt finished (success or error); returns its history entry."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.history(prompt_id)
            if entry is not None and entry.get("status", {}).get("completed") is not None:
                return entry
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited (code {self.process.returncode}) while running {prompt_id}:\n{self.log_tail()}")
            time.sleep(poll)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout} s")

    def interrupt(self) -> None:
        self.request("POST", "/interrupt", {})

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log()[-chars:]


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        # SIGTERM, not SIGINT: a process started from a non-interactive shell's background job inherits
        # SIGINT ignored, and the server keeps nothing worth a clean shutdown (temp folder, in-memory db).
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory: pytest.TempPathFactory, random_checkpoint: Path) -> Iterator[ComfyClient]:
    """A running ComfyUI with this pack loaded; killed at the end of the session.

    ``COMFYUI_SERVER_ARGS`` replaces the device flags (default ``--cpu --use-pytorch-cross-attention``).
    The server runs with ``OMP_NUM_THREADS=1`` unless the environment sets it (the pack's own defaults,
    for users, are torch's).
    """
    root = comfyui_root()
    base = tmp_path_factory.mktemp("comfyui_base")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / PACK_LINK_NAME).symlink_to(REPO_ROOT, target_is_directory=True)
    (base / "models" / "checkpoints").mkdir(parents=True)
    (base / "models" / "checkpoints" / CHECKPOINT_NAME).symlink_to(random_checkpoint)
    port = _free_port()
    command = [
        comfyui_python(), "main.py", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch",
        "--base-directory", str(base), "--database-url", "sqlite:///:memory:",
        *shlex.split(os.environ.get("COMFYUI_SERVER_ARGS", DEFAULT_SERVER_ARGS)),
    ]  # fmt: skip
    log_path = base / "server.log"
    # one torch thread unless the caller chose: on a small shared machine two threads ran 10-20× slower under load
    env = {"OMP_NUM_THREADS": "1", **os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=root, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    client = ComfyClient(f"http://127.0.0.1:{port}", process, log_path, base)
    try:
        start = time.monotonic()
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with code {process.returncode} before serving:\n{client.log_tail()}")
            try:
                client.object_info("CheckpointLoaderSimple")
                break
            except (OSError, RuntimeError):
                if time.monotonic() - start > SERVER_START_TIMEOUT_S:
                    raise TimeoutError(f"ComfyUI did not answer /object_info within {SERVER_START_TIMEOUT_S} s:\n{client.log_tail()}") from None
                time.sleep(0.2)
        client.startup_s = time.monotonic() - start
        yield client
    finally:
        _stop(process)
