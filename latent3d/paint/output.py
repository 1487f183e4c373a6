"""Latent-Paint's output: the latent texture decoded into an RGB texture with gutters, the textured mesh
(GLB with baseColorTexture, OBJ + MTL + PNG, through the export writers) and an RGB turntable.

Gutters ("seams don't show"): texels outside every UV chart were never trained (they still hold the
initial noise) and a VAE decoder's receptive field would carry that noise into the charts' borders. So
before decoding, every latent texel that no training lookup could have read (farther than one texel from
every UV triangle) takes the value of its nearest used texel; after decoding, every RGB texel more than one
texel outside the charts takes its nearest chart texel's colour (``export.uv.fill_gutters``), so a
viewer's bilinear and mip-mapped lookups at chart borders never fetch anything else.

Decoding (``decode_paint_texture``): the VAE turns an L×L latent into 8L×8L pixels. For an RGB texture of
T pixels (T a multiple of 8 with a VAE), the latent texture R×R is decoded at L = T/8 when that is smaller
(shrunk first, antialiased: a 512² latent would otherwise need a 4096² decode) and at R otherwise, the
result then resized to T. Without a VAE the linear map (``latent3d.colors``) is applied to the latent
texture upsampled to T.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..export.bake import VAE_SCALE, Decoder, decode_texture
from ..export.mesh import TexturedMesh
from ..export.surface import vertex_normals
from ..export.uv import fill_gutters, rasterize_uv
from ..export.writers import save_mesh
from ..nerf.cameras import eval_cameras
from .mesh import PaintMesh
from .render import MeshTensors, render_rgb
from .train import PaintResult

TEXTURE_RESOLUTIONS = (64, 4096)
"""Allowed RGB texture sides (inclusive)."""


def check_texture_resolution(resolution: int, with_vae: bool, name: str = "texture_resolution") -> int:
    """``resolution`` if it is an allowed RGB texture side (a multiple of 8 when a VAE decodes), else
    ValueError naming ``name``, the rule and the value."""
    low, high = TEXTURE_RESOLUTIONS
    if isinstance(resolution, bool) or not isinstance(resolution, int) or not low <= resolution <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {resolution!r}")
    if with_vae and resolution % VAE_SCALE:
        raise ValueError(f"{name} must be a multiple of {VAE_SCALE} when a VAE decodes the texture (it decodes h×w latents to 8h×8w pixels), got {resolution}")
    return resolution


def used_texels(uvs: np.ndarray, faces: np.ndarray, size: int, dilation: int = 1) -> np.ndarray:
    """[size, size] bool: texels whose centre lies in a UV triangle or that hold a vertex's UV, grown by
    ``dilation`` texels (the reach of a bilinear lookup). uvs [V, 2] v up, faces [F, 3]."""
    from scipy.ndimage import binary_dilation

    face_id, _ = rasterize_uv(np.array(uvs), np.array(faces), size)  # writable copies: torch warns on read-only arrays
    used = face_id >= 0
    cols = np.clip((uvs[:, 0] * size).astype(np.int64), 0, size - 1)
    rows = np.clip(((1.0 - uvs[:, 1]) * size).astype(np.int64), 0, size - 1)
    used[rows, cols] = True  # charts smaller than a texel cover no texel centre
    return binary_dilation(used, structure=np.ones((3, 3), dtype=bool), iterations=dilation) if dilation else used  # 3×3: diagonal neighbours too


def fill_latent_gutters(texture: torch.Tensor, mesh: PaintMesh) -> torch.Tensor:
    """[C, R, R] latent texture with every texel no lookup could read replaced by its nearest used one."""
    used = used_texels(mesh.uvs, mesh.faces, texture.shape[-1])
    image = texture.detach().float().cpu().permute(1, 2, 0).numpy()
    return torch.from_numpy(np.ascontiguousarray(fill_gutters(image, used))).permute(2, 0, 1).contiguous()


def decode_paint_texture(texture: torch.Tensor, mesh: PaintMesh, resolution: int = 1024, decode: Decoder | None = None) -> np.ndarray:
    """RGB texture [T, T, 3] uint8 (T = ``resolution``) of the latent ``texture`` [4, R, R] on ``mesh``'s UVs.

    ``decode``: a VAE decoder (``export.bake.Decoder``: latent [1, 4, h, w] model space -> [1, 3, 8h, 8w]
    in [0, 1]); None: the linear map. Gutters and sizes as the module docstring says.
    """
    check_texture_resolution(resolution, decode is not None)
    if not (torch.is_tensor(texture) and texture.dim() == 3 and texture.shape[1] == texture.shape[2]):
        raise ValueError(f"texture must be a square [C, R, R] latent tensor, got {getattr(texture, 'shape', type(texture).__name__)}")
    latent = fill_latent_gutters(texture, mesh)
    if decode is None:
        image = decode_texture(_resize(latent, resolution), None)
    else:
        image = decode_texture(_resize(latent, min(resolution // VAE_SCALE, latent.shape[-1])), decode)
        if image.shape[0] != resolution:
            rgb = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0
            image = (_resize(rgb, resolution).clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return np.ascontiguousarray(fill_gutters(image, used_texels(mesh.uvs, mesh.faces, resolution, dilation=1)))


def textured_mesh(mesh: PaintMesh, texture: np.ndarray) -> TexturedMesh:
    """The mesh (its own coordinates, vertices split at UV seams) with an RGB texture [H, W, 3] uint8."""
    return TexturedMesh(mesh.vertices, mesh.faces, vertex_normals(mesh.vertices, mesh.faces), uvs=mesh.uvs, texture=texture,
                        info={"source": mesh.source, "uv_origin": mesh.uv_origin})


def paint_output(result: PaintResult, decode: Decoder | None = None, resolution: int = 1024) -> TexturedMesh:
    """``result``'s mesh with its decoded RGB texture (``decode_paint_texture``)."""
    return textured_mesh(result.mesh, decode_paint_texture(result.texture, result.mesh, resolution, decode))


def write_painted(mesh: TexturedMesh, folder: str | os.PathLike, stem: str = "mesh") -> list[Path]:
    """``<folder>/<stem>.glb`` (embedded baseColorTexture) and ``<stem>.obj`` + ``.mtl`` + ``.png``."""
    folder = Path(folder)
    return save_mesh(mesh, folder / f"{stem}.glb") + save_mesh(mesh, folder / f"{stem}.obj")


def turntable_images(result: PaintResult, texture: np.ndarray, frames: int, size: int | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """[frames, 3, size, size] RGB renders in [0, 1] of the painted mesh (as the cameras saw it) around the
    evaluation orbit, on white, with the RGB ``texture`` [H, W, 3] uint8. size: default 8× the preview
    latent size (the size a VAE decode of a preview has)."""
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise ValueError(f"frames must be a positive integer, got {frames!r}")
    size = size or VAE_SCALE * result.config.preview_resolution
    mesh = MeshTensors.from_mesh(result.placed, device)
    rgb = torch.from_numpy(np.ascontiguousarray(texture)).to(device).permute(2, 0, 1).float() / 255.0
    cameras = eval_cameras(result.config.camera, frames, device)
    return torch.cat([render_rgb(mesh, rgb, cameras[i], size, backend=result.config.raster_backend) for i in range(frames)]).cpu()


def _resize(image: torch.Tensor, size: int) -> torch.Tensor:
    """[C, H, W] -> [C, size, size] bilinear (antialiased when shrinking)."""
    if image.shape[-1] == size and image.shape[-2] == size:
        return image
    shrink = size < max(image.shape[-2:])
    return F.interpolate(image[None], size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)[0]
