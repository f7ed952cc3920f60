"""mypy on the TensorRT-facing modules against tensorrt-stubs (TensorRT 10.13's Python API).

TensorRT cannot be installed here, so this is how its API use is checked in CI. The stubs live in a
stub path (`make` installs them with `pip install --target .typing-stubs`), never in the venv, where
they would make `import tensorrt` succeed without TensorRT. Two wrinkles:
- the package directories are mapped (runtime/ -> climax_deploy.runtime, ...), which mypy cannot
  follow through the editable install, so a temporary tree of symlinks recreates the package
  (tests/package_tree.py, from pyproject's package-dir);
- tensorrt-stubs 10.13.0.35.1 ships .pyi files mypy cannot parse (four parameters named `in`, one
  parameter without a default after defaulted ones) and no py.typed marker; a copy with only those
  lines repaired is put on MYPYPATH. Nothing else in the stubs changes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from package_tree import ROOT, assemble_package, module_file  # tests/ is on sys.path under pytest

CHECKED = [
    "export/fp16.py",
    "export/attention_modes.py",
    "export/tensorrt_profile.py",
    "export/tensorrt_build.py",
    "export/build_engine_cli.py",
    "runtime/tensorrt_runner.py",
    "runtime/tensorrt_contexts.py",
    "runtime/tensorrt_compat.py",
    "climax_deploy/tensorrt_version.py",
    "climax_deploy/cuda_driver.py",
    "kernels/trt_plugin.py",  # tensorrt.plugin is absent from the 10.13 stubs: typed as Any there
    "validate/polygraphy_io.py",
    "bench/gpu_check.py",  # climax-gpu-check
]
STUB_PACKAGES = ("tensorrt", "tensorrt_bindings")


STUB_PATH = ROOT / ".typing-stubs"  # the Makefile's STUB_PATH


def _stub_dir(package: str) -> Path | None:
    location = STUB_PATH / package
    return location if (location / "__init__.pyi").is_file() else None


def repair_stub(text: str) -> str:
    """Make tensorrt-stubs parseable: rename parameters called `in`, default a trailing parameter."""
    text = re.sub(r"(\(self(?:: \w+)?, )in: ", r"\1in_: ", text)
    return re.sub(r"(power: Weights = None, channel_axis: int)\)", r"\1 = ...)", text)


def typecheck_root(tmp: Path) -> Path:
    """Build the symlinked package tree and the repaired stubs under `tmp`."""
    assemble_package(tmp)
    for stub in STUB_PACKAGES:
        source_dir = _stub_dir(stub)
        if source_dir is None:
            pytest.skip(f"no {stub} stubs in {STUB_PATH} (make .venv/.installed; or pip install --no-deps "
                        f"--target {STUB_PATH.name} tensorrt-stubs==10.13.0.35.1)")
        target = tmp / stub
        target.mkdir()
        for pyi in source_dir.glob("*.pyi"):
            (target / pyi.name).write_text(repair_stub(pyi.read_text()))
    return tmp


def test_stub_repair_touches_only_the_broken_lines() -> None:
    line = "    def configure_plugin(self: IPluginV3, in: list[X], out: list[X]) -> None:"
    assert repair_stub(line) == "    def configure_plugin(self: IPluginV3, in_: list[X], out: list[X]) -> None:"
    assert repair_stub("def f(self, in: int) -> int:") == "def f(self, in_: int) -> int:"
    assert repair_stub("x: int  # in: the input") == "x: int  # in: the input"


WRONG_USE = (
    "from __future__ import annotations\n"
    "import tensorrt as trt\n"
    "def run(context: trt.IExecutionContext, config: trt.IBuilderConfig) -> None:\n"
    "    context.execute_async_v3('stream')\n"
    "    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, '1GiB')\n"
    "    config.set_flag(trt.BuilderFlag.FP32)\n"
)


@pytest.fixture(scope="module")
def mypy_output(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One mypy run over our TensorRT-facing files and a file that misuses TensorRT's API (wrong_use.py)."""
    pytest.importorskip("mypy")
    tmp_path = tmp_path_factory.mktemp("typecheck")
    root = typecheck_root(tmp_path / "root")
    (root / "wrong_use.py").write_text(WRONG_USE)
    files = [str(module_file(root, path)) for path in CHECKED] + [str(root / "wrong_use.py")]
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "--no-incremental",
         "--follow-imports=silent",  # report the files named; read the rest only for types
         "--cache-dir", str(tmp_path / "cache"), *files],
        capture_output=True, text=True, env={**os.environ, "MYPYPATH": str(root)}, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stdout + result.stderr  # 2: mypy itself failed
    return result.stdout


def test_tensorrt_modules_typecheck_against_the_stubs(mypy_output: str) -> None:
    ours = [line for line in mypy_output.splitlines() if ": error:" in line and "wrong_use.py" not in line]
    assert not ours, mypy_output
    assert f"checked {len(CHECKED) + 1} source files" in mypy_output, mypy_output


def test_the_stubs_really_check_tensorrt_calls(mypy_output: str) -> None:
    """A wrong use of TensorRT's API must fail the check (so a pass above means something)."""
    wrong = [line for line in mypy_output.splitlines() if "wrong_use.py" in line and ": error:" in line]
    assert len(wrong) == 3, mypy_output
