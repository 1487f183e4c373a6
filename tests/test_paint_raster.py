"""Latent-Paint texture lookup: texel centres, the v-up convention, gradients, mip-mapping."""

import pytest
import torch

from latent3d.paint.texture import mip_level, sample_texture

pytestmark = pytest.mark.unit


# ---- texture lookup ----------------------------------------------------------------------------------


def texel_centre_uv(rows: torch.Tensor, cols: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return torch.stack([(cols + 0.5) / width, 1.0 - (rows + 0.5) / height], -1).double()


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_texel_centres_read_their_texels(mode):
    texture = torch.arange(2 * 3 * 5, dtype=torch.float64).reshape(2, 3, 5)
    rows, cols = torch.meshgrid(torch.arange(3), torch.arange(5), indexing="ij")
    uv = texel_centre_uv(rows, cols, 3, 5)[None]
    torch.testing.assert_close(sample_texture(texture, uv, mode)[0], texture, atol=1e-6, rtol=0)


def test_bilinear_halfway_and_the_v_up_convention():
    texture = torch.tensor([[[1.0, 2.0], [3.0, 5.0]]], dtype=torch.float64)  # row 0 is the top
    uv = torch.tensor([[[[0.0, 0.0], [1.0, 1.0], [0.5, 0.75], [0.5, 0.5]]]], dtype=torch.float64)
    got = sample_texture(texture, uv)[0, 0, 0]
    # (0,0) is the bottom-left texel (3), (1,1) the top-right (2), (0.5, 0.75) halfway along the top row
    torch.testing.assert_close(got, torch.tensor([3.0, 2.0, 1.5, 2.75], dtype=torch.float64))


@pytest.mark.parametrize("mode", ["bilinear", "nearest", "mipmap"])
def test_sample_texture_gradcheck(mode):
    generator = torch.Generator().manual_seed(0)
    texture = torch.randn(2, 4, 4, dtype=torch.float64, generator=generator, requires_grad=True)
    uv = torch.rand(1, 3, 3, 2, dtype=torch.float64, generator=generator) * 0.9 + 0.05
    assert torch.autograd.gradcheck(lambda t: sample_texture(t, uv, mode), (texture,))


def test_mipmap_averages_a_minified_checkerboard_and_matches_bilinear_when_magnified():
    rows, cols = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    checker = (((rows + cols) % 2) * 2.0 - 1.0).double()[None]  # ±1 texels, mean 0
    far = texel_centre_uv(*torch.meshgrid(torch.arange(8) * 8.0 + 3.5, torch.arange(8) * 8.0 + 3.5, indexing="ij"), 64, 64)[None]
    torch.testing.assert_close(mip_level(far, (64, 64), 7), torch.full((1, 8, 8), 3.0, dtype=torch.float64))
    assert sample_texture(checker, far, "mipmap").abs().max() < 1e-9  # 8×8-texel footprint averages to 0
    near = torch.rand(1, 6, 6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 0.001 + 0.5
    torch.testing.assert_close(sample_texture(checker, near, "mipmap"), sample_texture(checker, near, "bilinear"))


def test_bad_texture_inputs_name_the_argument():
    cases = [
        (lambda: sample_texture(torch.zeros(4, 8, 8), torch.zeros(1, 2, 2, 3)), "uv"),
        (lambda: sample_texture(torch.zeros(8, 8), torch.zeros(1, 2, 2, 2)), "texture"),
        (lambda: sample_texture(torch.zeros(4, 8, 8), torch.zeros(1, 2, 2, 2), mode="cubic"), "mode"),
    ]
    for call, name in cases:
        with pytest.raises(ValueError, match=name):
            call()
