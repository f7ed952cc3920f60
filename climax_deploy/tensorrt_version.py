"""TensorRT version policy: which release is installed and which API paths it offers.

Shared by export (what an engine build may use) and runtime (what may run a plan). TensorRT itself
is imported lazily, so this module imports without it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import ModuleType

from climax_deploy.errors import BadInputError, MissingBackendError
from climax_deploy.optional import TENSORRT


@dataclass(frozen=True, order=True)
class TensorRTVersion:
    """A TensorRT release and the API paths it offers."""

    major: int
    minor: int
    patch: int = 0

    @classmethod
    def parse(cls, text: str) -> TensorRTVersion:
        match = re.match(r"^(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
        if not match:
            raise BadInputError(f"cannot read a TensorRT version from {text!r}; expected e.g. '10.13.0'")
        return cls(int(match[1]), int(match[2]), int(match[3] or 0))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    @property
    def strongly_typed_only(self) -> bool:
        """TensorRT 11 builds strongly typed networks only (BuilderFlag.FP16 is gone)."""
        return self.major >= 11

    @property
    def has_fp16_flag(self) -> bool:
        """BuilderFlag.FP16 exists (deprecated since 10.12, removed in 11)."""
        return self.major < 11

    @property
    def has_native_attention(self) -> bool:
        """The ONNX parser maps Attention-23 to the fused IAttention layer (10.14+)."""
        return (self.major, self.minor) >= (10, 14)

    @property
    def has_python_plugins(self) -> bool:
        """tensorrt.plugin (quickly deployable Python plugins); AOT implementations since 10.9."""
        return (self.major, self.minor) >= (10, 9)


def import_tensorrt() -> ModuleType:
    """The full TensorRT Python module; MissingBackendError with the install line when absent."""
    return TENSORRT.load()


def tensorrt_version(module: ModuleType | None = None) -> TensorRTVersion:
    module = module or import_tensorrt()
    return TensorRTVersion.parse(str(module.__version__))


def tensorrt_available() -> bool:
    try:
        import_tensorrt()
    except MissingBackendError:
        return False
    return True


__all__ = ["TensorRTVersion", "import_tensorrt", "tensorrt_available", "tensorrt_version"]
