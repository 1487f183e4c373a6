import pytest
import torch
import torch.nn.functional as F

from latent3d.nerf.grid import GridConfig, TorchGridEncoding, _WeightedGather, level_rows, make_grid_encoding, table_to_tcnn, tcnn_to_table

pytestmark = pytest.mark.unit


def trilinear_reference(dense: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """dense [F, D, H, W] vertex values indexed [f, k, j, i]; pos [N, 3] in vertex units (i, j, k)."""
    sizes = torch.tensor([dense.shape[3], dense.shape[2], dense.shape[1]], dtype=pos.dtype)
    grid = (2 * pos / (sizes - 1) - 1).view(1, 1, 1, -1, 3)
    out = F.grid_sample(dense[None].double(), grid.double(), mode="bilinear", padding_mode="border", align_corners=True)
    return out.view(dense.shape[0], -1).T


def level_positions(encoding: TorchGridEncoding, level: int, x: torch.Tensor) -> torch.Tensor:
    return x * encoding.config.level_scales()[level] + 0.5


def test_dense_levels_equal_trilinear_interpolation():
    cfg = GridConfig(levels=3, features_per_level=2, base_resolution=4, finest_resolution=16, log2_table_size=14)
    enc = TorchGridEncoding(cfg)
    assert enc.n_dense == 3  # every level fits: no hashing, no collisions
    with torch.no_grad():
        enc.table.normal_()
    x = torch.rand(500, 3, generator=torch.Generator().manual_seed(0))
    x[:4] = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.5], [0.999, 0.001, 0.5]])
    out = enc(x).double()
    for level in range(cfg.levels):
        r = enc.resolutions[level]
        k, j, i = torch.meshgrid(torch.arange(r), torch.arange(r), torch.arange(r), indexing="ij")
        rows = enc.vertex_rows(level, torch.stack([i, j, k], -1).reshape(-1, 3))
        dense = enc.table.detach()[rows].T.reshape(cfg.features_per_level, r, r, r)
        expected = trilinear_reference(dense, level_positions(enc, level, x))
        torch.testing.assert_close(out[:, 2 * level : 2 * level + 2], expected, atol=1e-5, rtol=1e-5)


def test_hashed_level_without_collisions_equals_trilinear_interpolation():
    cfg = GridConfig(levels=1, features_per_level=2, base_resolution=50, finest_resolution=50, log2_table_size=16)
    enc = TorchGridEncoding(cfg)
    assert enc.n_dense == 0  # 50^3 > 2^16: this level is hashed
    with torch.no_grad():
        enc.table.normal_()
    # points in a sub-box whose vertices hash to distinct rows (checked, so "no collisions" holds)
    lo, n = 10, 6
    ax = torch.arange(lo, lo + n)
    k, j, i = torch.meshgrid(ax, ax, ax, indexing="ij")
    rows = enc.vertex_rows(0, torch.stack([i, j, k], -1).reshape(-1, 3))
    assert rows.unique().numel() == rows.numel()
    scale = cfg.level_scales()[0]
    pos = lo + (n - 1) * torch.rand(300, 3, generator=torch.Generator().manual_seed(1))
    x = (pos - 0.5) / scale
    dense = enc.table.detach()[rows].T.reshape(2, n, n, n)
    expected = trilinear_reference(dense, pos - lo)
    torch.testing.assert_close(enc(x).double(), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("log2_table_size", [12, 4])  # all dense; hashed with collisions
def test_gradient_check(log2_table_size):
    cfg = GridConfig(levels=2, features_per_level=2, base_resolution=3, finest_resolution=6, log2_table_size=log2_table_size)
    enc = TorchGridEncoding(cfg).double()
    x = torch.rand(7, 3, generator=torch.Generator().manual_seed(2))
    table = enc.table.detach().clone().requires_grad_(True)
    idx, w = enc.indices(x)

    def g(t):  # the encoding's gather with the table as the input
        return _WeightedGather.apply(t, idx, w.double())

    assert torch.autograd.gradcheck(g, (table,), eps=1e-6, atol=1e-6)


def test_output_shape_dtype_and_unit_cube_clamping():
    cfg = GridConfig(levels=4, base_resolution=8, finest_resolution=64, log2_table_size=12)
    enc = make_grid_encoding(cfg, "cpu")
    out = enc(torch.rand(10, 3))
    assert out.shape == (10, 8) and out.dtype == torch.float32
    assert torch.isfinite(enc(torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]))).all()


def test_default_grid_matches_official_sizes():
    cfg = GridConfig()
    assert abs(cfg.per_level_scale - 2 ** (7 / 15)) < 1e-9
    enc = TorchGridEncoding(cfg)
    assert enc.output_dim == 32
    assert enc.table.shape[0] <= 16 * 2**19 and enc.n_dense == 5
    assert enc.table.abs().max() <= 1e-4


def test_backend_selection_errors():
    cfg = GridConfig(backend="tcnn")
    with pytest.raises(RuntimeError, match="tcnn.*CUDA"):
        make_grid_encoding(cfg, "cpu")
    with pytest.raises(ValueError, match="backend"):
        from latent3d.backends import pick_backend

        pick_backend("cuda-magic", "tcnn", "tinycudann", torch.device("cpu"))
    assert isinstance(make_grid_encoding(GridConfig(levels=2, log2_table_size=10), "cpu"), TorchGridEncoding)


@pytest.mark.parametrize(
    "kwargs,name", [({"levels": 0}, "levels"), ({"log2_table_size": 40}, "log2_table_size"), ({"finest_resolution": 4}, "finest_resolution")]
)
def test_bad_config_names_the_field(kwargs, name):
    with pytest.raises(ValueError, match=name):
        GridConfig(**kwargs)


def test_importing_the_package_does_not_import_accelerators():
    import subprocess
    import sys

    code = "import sys, latent3d.nerf.train, latent3d.nerf.grid; print('tinycudann' in sys.modules, 'nvdiffrast' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=str(__import__('pathlib').Path(__file__).parents[1]))
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.reference
def test_tcnn_twin_equivalence():
    tcnn = pytest.importorskip("tinycudann", reason="tiny-cuda-nn not installed (CUDA build)")
    if not torch.cuda.is_available():
        pytest.skip("tiny-cuda-nn needs CUDA")
    del tcnn
    from latent3d.nerf.grid import TcnnGridEncoding

    cfg = GridConfig(levels=4, base_resolution=8, finest_resolution=64, log2_table_size=12)
    fast = TcnnGridEncoding(cfg).cuda()
    twin = TorchGridEncoding(cfg).cuda()
    twin.load_state_dict(fast.state_dict())  # tcnn's state dict is in the twin's table layout
    x = torch.rand(4096, 3, device="cuda")
    torch.testing.assert_close(fast(x), twin(x), atol=1e-3, rtol=1e-2)


def test_tcnn_parameter_layout_round_trip():
    """tiny-cuda-nn pads each level to a multiple of 8 rows; the conversion strips and restores that."""
    cfg = GridConfig(levels=4, base_resolution=5, finest_resolution=40, log2_table_size=10)
    enc = TorchGridEncoding(cfg)
    assert level_rows(cfg) == [b - a for a, b in zip(enc.level_offsets[:-1], enc.level_offsets[1:])] == [125, 1000, 1024, 1024]
    flat = table_to_tcnn(enc.table.detach(), cfg)
    assert flat.numel() == (128 + 1000 + 1024 + 1024) * 2
    assert torch.equal(flat.view(-1, 2)[125:128], torch.zeros(3, 2))  # level 0's padding
    assert torch.equal(tcnn_to_table(flat, cfg), enc.table.detach())


def test_table_gradient_matches_a_hand_computation_and_accumulates():
    """d/dtable of Σ out² is 2·out scattered with the trilinear weights; a second backward adds to it."""
    cfg = GridConfig(levels=3, base_resolution=4, finest_resolution=32, log2_table_size=8)
    enc = TorchGridEncoding(cfg)
    x = torch.rand(300, 3, generator=torch.Generator().manual_seed(5))
    enc(x).square().sum().backward()
    first = enc.table.grad.clone()
    enc(x).square().sum().backward()  # accumulate into .grad, which is the lent buffer
    torch.testing.assert_close(enc.table.grad, 2 * first)
    enc.table.grad = None
    enc(x).square().sum().backward()
    torch.testing.assert_close(enc.table.grad, first)
    reference = torch.zeros_like(enc.table)
    idx, w = enc.indices(x)
    out = (enc.table.detach()[idx] * w[..., None]).sum(2).reshape(300, -1)
    reference.index_add_(0, idx.reshape(-1), (2 * out.reshape(300, -1, 1, 2) * w[..., None]).reshape(-1, 2))
    torch.testing.assert_close(first, reference, atol=1e-6, rtol=1e-5)
