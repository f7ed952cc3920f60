"""The PyTorch reference behind the same forecaster contract as the deployed backends."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from climax_deploy.model.climax import ClimaX
from climax_deploy.model.physics_attention import AttentionImpl
from climax_deploy.runtime.base import Forecaster, ModelSpec


class TorchForecaster(Forecaster):
    """Runs the reference model (fp32 by default) on numpy inputs."""

    backend = "torch"

    def __init__(self, model: ClimaX, attention: AttentionImpl = "literal", dtype: torch.dtype = torch.float32) -> None:
        cfg = model.config
        super().__init__(ModelSpec(cfg.variables, cfg.outputs, cfg.img_size, precision=_precision(dtype)))
        self.model = model.eval()
        self.attention: AttentionImpl = attention
        self.dtype = dtype

    def _predict_impl(self, x: np.ndarray, lead_times: np.ndarray) -> np.ndarray:
        model = self.model.to(self.dtype)
        with torch.inference_mode():
            y = model(torch.from_numpy(x).to(self.dtype), torch.from_numpy(lead_times), attention=self.attention)
        return y.float().numpy()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "attention": self.attention, "threads": torch.get_num_threads()}


def _precision(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, str(dtype))
