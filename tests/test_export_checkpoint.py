"""export_checkpoint on a checkpoint saved by a tiny trainer (the CLI's entry point)."""

import numpy as np
import pytest
import torch
import trimesh

from latent3d.export import ExportConfig, export_checkpoint
from latent3d.guidance.denoiser import OracleDenoiser
from latent3d.guidance.prompts import PromptEmbeddings
from latent3d.nerf.train import NerfConfig, NerfTrainer

pytestmark = pytest.mark.smoke


def test_export_checkpoint_of_a_tiny_trained_field(tmp_path):
    oracle = OracleDenoiser(lambda cams, h, w: torch.zeros(len(cams), 4, h, w))
    trainer = NerfTrainer(NerfConfig.tiny(), oracle, PromptEmbeddings.single(torch.zeros(1, 4, 8), torch.zeros(1, 4, 8)), device="cpu")
    trainer.train_step()  # refreshes the occupancy grid, so export takes its coarse density from it
    checkpoint = trainer.save(tmp_path / "run.safetensors")
    fast = ExportConfig(resolution=64, texture_size=256, face_budget=2000)
    written = {}
    for fmt in ("glb", "obj", "ply"):
        written[fmt] = export_checkpoint(checkpoint, tmp_path / "out", format=fmt, config=fast)
        assert written[fmt][0] == tmp_path / "out" / f"run.{fmt}" and all(p.is_file() for p in written[fmt])
    assert [p.suffix for p in written["obj"]] == [".obj", ".mtl", ".png"]
    glb = trimesh.load(written["glb"][0], force="mesh", process=False)
    assert glb.visual.kind == "texture" and len(glb.faces) > 0 and np.isfinite(glb.vertices).all()
    # the density blob that renders show (σ ≈ 1 fog fills the rest of the fresh field's box)
    assert np.linalg.norm(glb.vertices, axis=1).max() < 0.8
    assert trimesh.load(written["ply"][0], force="mesh").visual.kind == "vertex"
    with pytest.raises(ValueError, match="format must be one of"):
        export_checkpoint(checkpoint, tmp_path / "out", format="fbx")
    with pytest.raises(ValueError, match="name must be a plain file name"):
        export_checkpoint(checkpoint, tmp_path / "out", name="../escape")
