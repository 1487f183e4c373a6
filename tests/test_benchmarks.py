"""Every benchmark's --quick mode runs (so none rots unseen), and what the benchmarks need is installable.

Benchmarks are discovered: every ``benchmarks/*.py`` except helpers (names starting with ``_``) and
``gpu_check.py`` (tests/test_gpu_check.py). Each one's ``--quick`` mode runs in a subprocess; it must exit
0 with a last line ``RESULT key=value ...`` of finite numbers, or ``skipped: <reason>`` (then this test
skips with that reason, e.g. comfy_denoiser.py without COMFYUI_ROOT).
"""

from __future__ import annotations

import ast
import importlib.metadata
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement

pytestmark = pytest.mark.smoke

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
NOT_BENCHMARKS = {"gpu_check.py"}
RESULT = re.compile(r"RESULT( [A-Za-z_][A-Za-z0-9_]*=\S+)+")
QUICK_TIMEOUT_S = 120


def discovered() -> list[str]:
    return sorted(p.name for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_") and p.name not in NOT_BENCHMARKS)


def run_script(args: list[str], code: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-c", code, *args] if code is not None else [sys.executable, *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=QUICK_TIMEOUT_S)


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def parse_result(line: str) -> dict[str, float]:
    """``RESULT k=v ...`` -> {k: float(v)}; raises AssertionError naming what is wrong."""
    assert RESULT.fullmatch(line), f"last line is not 'RESULT key=value ...': {line!r}"
    figures = dict(item.split("=", 1) for item in line.split()[1:])
    values = {}
    for key, text in figures.items():
        try:
            values[key] = float(text)
        except ValueError:
            raise AssertionError(f"RESULT {key}={text!r} is not a number") from None
        assert math.isfinite(values[key]), f"RESULT {key}={text} is not finite"
    return values


def test_discovery_finds_the_benchmarks():
    assert {"sds_step.py", "shape_loss.py", "export.py", "comfy_denoiser.py"} <= set(discovered())
    assert not any(name.startswith("_") or name in NOT_BENCHMARKS for name in discovered())


@pytest.mark.parametrize("name", discovered())
def test_quick_mode_runs_and_ends_with_a_result_line(name):
    env_root = os.environ.get("COMFYUI_ROOT")
    proc = run_script([str(BENCHMARKS / name), "--quick"])
    assert proc.returncode == 0, f"{name} --quick exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    line = last_line(proc.stdout)
    if line.startswith("skipped:"):
        pytest.skip(f"{name}: {line[len('skipped:'):].strip()} (COMFYUI_ROOT={env_root!r})")
    figures = parse_result(line)
    assert figures, name


def test_result_parser_rejects_what_the_convention_forbids():
    assert parse_result("RESULT a=1 b=2.5e-3") == {"a": 1.0, "b": 0.0025}
    for bad in ("RESULT", "RESULT a=nan", "RESULT a=inf", "RESULT a=fast", "result a=1", "RESULT a= 1"):
        with pytest.raises(AssertionError):
            parse_result(bad)


BLOCK_RAY_BACKENDS = """
import runpy, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("embreex", "rtree"):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)", name=name)
        return None
sys.meta_path.insert(0, Block())
script = sys.argv[1]
sys.path.insert(0, str(__import__("pathlib").Path(script).parent))
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")
"""


def test_export_without_ray_casting_backends_names_the_pip_line():
    """A fresh `pip install -r requirements.txt` has neither embreex nor rtree: the fidelity stage must say
    how to install them, and the benchmark must still finish."""
    proc = run_script([str(BENCHMARKS / "export.py"), "--quick", "--fit-steps", "2", "--vae-latent", "0"], code=BLOCK_RAY_BACKENDS)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "fidelity: skipped:" in proc.stdout and "pip install -r requirements-bench.txt" in proc.stdout, proc.stdout[-2000:]
    figures = parse_result(last_line(proc.stdout))
    assert "iou" not in figures and figures["faces"] > 0


# -- requirements ---------------------------------------------------------------------------------------------


def requirement_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_bench_requirements_include_the_runtime_and_match_the_pyproject_extra():
    lines = requirement_lines(ROOT / "requirements-bench.txt")
    assert "-r requirements.txt" in lines
    bench = {str(Requirement(line)) for line in lines if not line.startswith("-")}
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extra = {str(Requirement(line)) for line in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["bench"]}
    assert bench == extra
    names = {Requirement(line).name for line in bench}
    assert {"rtree", "embreex"} <= names
    assert "-r requirements-bench.txt" in requirement_lines(ROOT / "requirements-dev.txt")


# (platform environment, has an embreex wheel on the index) as found with
# `pip download --no-deps --only-binary=:all: --platform <tag> --python-version 3.1x embreex`
EMBREEX_WHEELS = [
    ({"sys_platform": "linux", "platform_machine": "x86_64", "platform_release": "6.1.0"}, True),
    ({"sys_platform": "linux", "platform_machine": "aarch64", "platform_release": "6.1.0"}, False),
    ({"sys_platform": "darwin", "platform_machine": "x86_64", "platform_release": "21.6.0"}, True),  # 2.17 wheel, macOS 10.9+
    ({"sys_platform": "darwin", "platform_machine": "arm64", "platform_release": "22.1.0"}, True),  # macOS 13+
    ({"sys_platform": "darwin", "platform_machine": "arm64", "platform_release": "21.6.0"}, False),  # macOS 12
    ({"sys_platform": "win32", "platform_machine": "AMD64", "platform_release": "10"}, True),
    ({"sys_platform": "win32", "platform_machine": "ARM64", "platform_release": "10"}, False),
]


@pytest.mark.parametrize("environment, has_wheel", EMBREEX_WHEELS)
def test_embreex_is_asked_for_exactly_where_it_has_a_wheel(environment, has_wheel):
    """embreex has no source release: asking for it where no wheel exists would fail the whole install."""
    (line,) = [line for line in requirement_lines(ROOT / "requirements-bench.txt") if line.startswith("embreex")]
    marker = Requirement(line).marker
    assert marker is not None and marker.evaluate(environment) is has_wheel
    rtree = [Requirement(x) for x in requirement_lines(ROOT / "requirements-bench.txt") if x.startswith("rtree")]
    assert rtree and rtree[0].marker is None  # the portable fallback goes everywhere
    assert isinstance(marker, Marker)


# imports a benchmark may make without a requirements line: the project, helpers beside the scripts, the
# host (ComfyUI), torch (the host's own), and optional accelerators probed at run time
ALLOWED_UNLISTED = {"latent3d", "_common", "comfy_host", "make_checkpoint", "comfy", "comfyui_latent3d", "torch", "tinycudann", "nvdiffrast", "benchmarks"}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_third_party_import_of_the_benchmarks_is_in_a_requirements_file():
    listed = set()
    for path in (ROOT / "requirements.txt", ROOT / "requirements-bench.txt", ROOT / "requirements-batch.txt"):
        listed |= {normalized(Requirement(line).name) for line in requirement_lines(path) if not line.startswith("-")}
    siblings = {path.stem for path in BENCHMARKS.glob("*.py")}  # one benchmark may reuse another's functions
    distributions = importlib.metadata.packages_distributions()
    missing = []
    for path in sorted(BENCHMARKS.glob("*.py")):
        for module in sorted(imported_modules(path) - ALLOWED_UNLISTED - siblings - set(sys.stdlib_module_names)):
            # an optional extra that is not installed here is known by its own name (e.g. ray)
            provided_by = {normalized(d) for d in distributions.get(module, [])} or {normalized(module)}
            if not provided_by & listed:
                missing.append(f"{path.name} imports {module} (distribution {sorted(provided_by) or 'not installed'})")
    assert not missing, "not in requirements.txt, requirements-bench.txt or requirements-batch.txt: " + "; ".join(missing)
