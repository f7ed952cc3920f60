"""TensorRT's compatibility rules: which TensorRT module may run a plan, on which release and GPU.

Pure: the engine's manifest is compared with the installed TensorRT and the GPU before anything is
deserialised, so a mismatch is one clear message, not a crash (tested without TensorRT).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from climax_deploy.errors import MissingBackendError, ModelFileError
from climax_deploy.manifest import EngineManifest, GpuRecord
from climax_deploy.optional import TENSORRT, TENSORRT_DISPATCH, TENSORRT_LEAN, OptionalDependency
from climax_deploy.tensorrt_version import TensorRTVersion

log = logging.getLogger(__name__)

# Version-compatible plans run on later TensorRT releases of the same major and, across majors, only
# where TensorRT documents it: 8 -> 9 and 10 (TensorRT 10.16 docs, "Version Compatibility"), 9 -> 10
# (same page: TensorRT 8 or 9 engines with TensorRT 10), 10 -> 11 (TensorRT 11.1 docs, "Engine
# Compatibility"). A major not listed runs its own major only; version compatibility starts at 8.6.
VERSION_COMPATIBLE_MAJORS: dict[int, tuple[int, ...]] = {8: (8, 9, 10), 9: (9, 10), 10: (10, 11)}
VERSION_COMPATIBLE_SINCE = TensorRTVersion(8, 6)
# Python modules that can run a plan, in order of preference (see select_runtime).
RUNTIME_MODULES: dict[str, OptionalDependency] = {
    "tensorrt_dispatch": TENSORRT_DISPATCH,
    "tensorrt": TENSORRT,
    "tensorrt_lean": TENSORRT_LEAN,
}


def runtime_candidates(manifest: EngineManifest) -> tuple[str, ...]:
    """The TensorRT modules that may run this plan, best first.

    A version-compatible plan carries its lean runtime unless built with --exclude-lean-runtime: the
    dispatch runtime loads it, and the full runtime does when host code is allowed (NVIDIA's sample
    samples/python/engine_refit_onnx_bidaf, v10.13.0: tensorrt_dispatch, else tensorrt with
    engine_host_code_allowed). The lean runtime runs version-compatible plans of its own version only.
    Any other plan needs the full runtime of the version that built it.
    """
    if manifest.build.version_compatible and not manifest.build.exclude_lean_runtime:
        return ("tensorrt_dispatch", "tensorrt", "tensorrt_lean")
    if manifest.build.version_compatible:
        return ("tensorrt", "tensorrt_lean")
    return ("tensorrt",)


def check_engine_compatibility(
    manifest: EngineManifest, installed: TensorRTVersion, gpu: GpuRecord | None, module: str = "tensorrt"
) -> None:
    """Refuse an engine that `module` of version `installed` or this GPU cannot run; the message says what to do."""
    built = TensorRTVersion.parse(manifest.tensorrt_version)
    rebuild = "rebuild it here with build-engine"
    carries_lean = manifest.build.version_compatible and not manifest.build.exclude_lean_runtime
    if carries_lean and module != "tensorrt_lean":
        if built < VERSION_COMPATIBLE_SINCE:
            raise ModelFileError(f"engine built with TensorRT {built}: version compatibility needs >= 8.6; {rebuild}")
        if installed < built:
            raise ModelFileError(
                f"engine is version-compatible from TensorRT {built} onwards, but {installed} is installed "
                f"(compatibility is forward only); upgrade TensorRT or {rebuild}"
            )
        majors = VERSION_COMPATIBLE_MAJORS.get(built.major, (built.major,))
        if installed.major not in majors:
            raise ModelFileError(
                f"engine built with TensorRT {built} runs on TensorRT {' or '.join(map(str, majors))}.x, "
                f"not {installed}; {rebuild}"
            )
    elif installed != built:
        why = {
            "tensorrt_lean": "the lean runtime runs only plans built by its own version",
            "tensorrt": "--exclude-lean-runtime plans carry no runtime of their own"
            if manifest.build.version_compatible
            else "build with --version-compatible to run on later releases",
        }[module]
        raise ModelFileError(f"engine built with TensorRT {built} but {module} {installed} is installed ({why}); {rebuild}")
    if gpu is None:
        return
    want = manifest.gpu
    level = manifest.build.hardware_compatibility
    built_cc = _cc(want.compute_capability)
    here_cc = _cc(gpu.compute_capability)
    if level == "ampere+":
        if here_cc < (8, 0):
            raise ModelFileError(f"engine needs an Ampere or newer GPU (compute capability >= 8.0); {gpu.name} is {gpu.compute_capability}")
    elif here_cc != built_cc:
        raise ModelFileError(
            f"engine built for compute capability {want.compute_capability} ({want.name}), "
            f"this GPU is {gpu.name} ({gpu.compute_capability}); {rebuild} or build with --hardware-compat ampere+"
        )
    elif level == "none" and want.name != gpu.name:
        log.warning("engine was built on %s and runs on %s (same compute capability): performance may differ",
                    want.name, gpu.name)  # fmt: skip


@dataclass(frozen=True)
class RuntimeChoice:
    """The TensorRT module that runs a plan, its version, and whether the plan's host code must be allowed."""

    module: str
    version: TensorRTVersion
    host_code: bool


def select_runtime(manifest: EngineManifest, installed: Mapping[str, TensorRTVersion]) -> RuntimeChoice:
    """The first of runtime_candidates that is installed (`installed`: module -> version) and may run the plan.

    MissingBackendError when none of them is installed, else the first candidate's ModelFileError.
    """
    candidates = runtime_candidates(manifest)
    refusals: list[ModelFileError] = []
    for module in candidates:
        version = installed.get(module)
        if version is None:
            continue
        try:
            check_engine_compatibility(manifest, version, None, module)
        except ModelFileError as exc:
            refusals.append(exc)
            continue
        host_code = manifest.build.version_compatible and not manifest.build.exclude_lean_runtime and module == "tensorrt"
        return RuntimeChoice(module, version, host_code)
    if refusals:
        raise refusals[0]
    raise MissingBackendError(
        f"this engine runs on one of {', '.join(candidates)}, none of which is installed: {TENSORRT.install}"
    )


def installed_runtimes(modules: tuple[str, ...]) -> dict[str, TensorRTVersion]:
    """Versions of the TensorRT runtime modules among `modules` that import here."""
    found: dict[str, TensorRTVersion] = {}
    for name in modules:
        dependency = RUNTIME_MODULES[name]
        if dependency.available():
            found[name] = TensorRTVersion.parse(str(dependency.load().__version__))
    return found


def _cc(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    try:
        return int(major), int(minor or 0)
    except ValueError:
        raise ModelFileError(f"compute capability {text!r} is not of the form 'major.minor'") from None


__all__ = [
    "RUNTIME_MODULES",
    "RuntimeChoice",
    "VERSION_COMPATIBLE_MAJORS",
    "check_engine_compatibility",
    "installed_runtimes",
    "runtime_candidates",
    "select_runtime",
]
