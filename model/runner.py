"""The PyTorch reference behind the same runner contract as the deployed backends."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from climax_deploy.errors import BadInputError
from climax_deploy.manifest import Manifest
from climax_deploy.model.climax import ClimaX
from climax_deploy.model.physics_attention import AttentionImpl
from climax_deploy.runner import ModelSpec, Runner

PRECISION_DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class TorchRunner(Runner):
    """Runs the reference model eagerly (fp32 by default) on numpy inputs."""

    backend = "torch"

    def __init__(
        self,
        model: ClimaX,
        attention: AttentionImpl = "literal",
        precision: str = "fp32",
        manifest: Manifest | None = None,
    ) -> None:
        if precision not in PRECISION_DTYPES:
            raise BadInputError(f"precision must be one of {sorted(PRECISION_DTYPES)}, got {precision!r}")
        cfg = model.config
        super().__init__(ModelSpec(cfg.variables, cfg.outputs, cfg.img_size, precision=precision), manifest)
        self.model: ClimaX | None = model.eval()
        self.attention: AttentionImpl = attention
        self.dtype = PRECISION_DTYPES[precision]

    def _predict_impl(self, x: np.ndarray, lead_times: np.ndarray) -> np.ndarray:
        assert self.model is not None
        model = self.model.to(self.dtype)
        with torch.inference_mode():
            y = model(torch.from_numpy(x).to(self.dtype), torch.from_numpy(lead_times), attention=self.attention)
        return y.float().numpy()

    def _close_impl(self) -> None:
        self.model = None  # the weights are freed once the caller drops its own reference

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "attention": self.attention, "threads": torch.get_num_threads()}
