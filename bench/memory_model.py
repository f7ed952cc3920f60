"""GPU memory of a TensorRT engine per attention mode, computed from tensor shapes (not measured).

`climax-bench --memory-model` prints the table of docs/memory.md ("TensorRT engines") from this module, so
the doc's numbers are reproducible. Until real engines have been measured on a GPU, this is a
model: every term is a tensor whose shape follows from the config, under the assumptions named below.

    total = weights + activations + workspace + context

- weights: the parameters, float16, except the float32 islands (LayerNorms, the output head, beta).
- activations: TensorRT sizes one activation block for the whole engine by its peak live set. Per token,
  the MLP holds the residual (fp16), the LayerNorm output (fp32 island) and the hidden layer before and
  after GELU (fp16); block 0's attention holds the residual, q/k/v and the output (fp16) plus what the
  attention mode adds, below. The peak is the larger of the two, plus the float32 input and output.
- what each attention mode adds (B samples, H heads, N patches):
    inline   the parser expands the ElevationAttention function: the fp32 bias [B, 1, N, N] and, per
             head at once (fp16 exports keep the heads in one chain), fp32 scores [B, H, N, N] into the
             softmax and fp16 probabilities out of it; casts and adds are assumed fused into neighbours.
    native   IAttention on the fused (flash) path: the fp16 mask [B, 1, N, N] is still an input tensor,
             plus O(N) softmax statistics; `native-unfused` is the same mode where TensorRT has no fused
             kernel for this mask and materialises the scores as inline does.
    plugin   the Triton kernel: softmax statistics in registers, nothing of size N x N; the elevations
             [B, N] in fp32 only.
- workspace: the tactics' scratch (GEMM, fused attention), bounded by build-engine --workspace; budgeted
  at WORKSPACE_BYTES.
- context: the CUDA context and TensorRT's, cuBLAS's and cuDNN's code and handles; budgeted at CONTEXT_BYTES.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from climax_deploy.model.config import PRESETS, ModelConfig

GiB = 2**30
GB = 10**9
WORKSPACE_BYTES = 1 * GiB  # assumed tactic scratch (build-engine --workspace 1GiB caps it)
CONTEXT_BYTES = 1 * GiB  # assumed CUDA context + TensorRT/cuBLAS/cuDNN
GPU_BYTES = 80 * GiB  # an 80 GB A100/H100 (81920 MiB / 81559 MiB)
MODES = ("inline", "native", "native-unfused", "plugin")
PATCHES = (8192, 32768, 131072)
FP16, FP32 = 2, 4
INT32_ELEMENTS = 2**31  # tensors past this need TensorRT 10's large-tensor support in every layer they touch


def parameter_counts(config: ModelConfig) -> dict[str, int]:
    """Parameters of the PyTorch model by kind: 'fp32' (LayerNorm, head, beta) and 'fp16' (the rest).

    From the shapes in docs/model.md; tests/test_bench.py checks the sum against the model's own count.
    """
    d, v, p2, n = config.embed_dim, len(config.variables), config.patch_size**2, config.num_patches
    hidden = int(d * config.mlp_ratio)
    embed = v * (d * p2 + d) + v * d  # per-variable patch embeddings, variable embeddings
    aggregate = d + (3 * d * d + 3 * d) + (d * d + d)  # var_query, in_proj, out_proj
    per_block_linear = (3 * d * d + 3 * d) + (d * d + d) + (hidden * d + hidden) + (d * hidden + d)
    fp16 = embed + aggregate + n * d + 2 * d + config.depth * per_block_linear  # + pos_embed, lead time
    fp32 = config.depth * 4 * d + 1 + 2 * d + (d * v * p2 + v * p2)  # LayerNorms, beta, final norm, head
    return {"fp16": fp16, "fp32": fp32}


@dataclass(frozen=True)
class EngineMemory:
    """One engine's modelled GPU memory, in bytes."""

    mode: str
    patches: int
    batch: int
    weights: int
    activations: int
    attention_extra: int  # the part of `activations` the attention mode adds (N x N tensors or O(N) scratch)
    workspace: int
    context: int
    largest_tensor: int  # elements of the largest single tensor

    @property
    def total(self) -> int:
        return self.weights + self.activations + self.workspace + self.context

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "patches": self.patches, "batch": self.batch, "weights": self.weights,
                "activations": self.activations, "attention_extra": self.attention_extra,
                "workspace": self.workspace, "context": self.context, "total": self.total,
                "largest_tensor_elements": self.largest_tensor}  # fmt: skip


def attention_extra(mode: str, batch: int, heads: int, patches: int) -> tuple[int, int]:
    """(bytes, elements of its largest tensor) that attention `mode` keeps live beyond q, k, v and output."""
    nn = batch * patches * patches
    if mode in ("inline", "native-unfused"):
        mask = nn * (FP32 if mode == "inline" else FP16)
        return mask + heads * nn * (FP32 + FP16), heads * nn
    if mode == "native":
        return nn * FP16 + batch * heads * patches * 2 * FP32, nn
    if mode == "plugin":
        return batch * patches * FP32, batch * patches
    raise ValueError(f"expected an attention mode among {MODES}, got {mode!r}")


def engine_memory(config: ModelConfig, mode: str, batch: int = 1) -> EngineMemory:
    """The modelled memory of an fp16 engine of `config` in attention `mode` (see the module docstring)."""
    counts = parameter_counts(config)
    weights = counts["fp16"] * FP16 + counts["fp32"] * FP32
    tokens = batch * config.num_patches
    d, hidden = config.embed_dim, int(config.embed_dim * config.mlp_ratio)
    mlp_live = tokens * (d * FP16 + d * FP32 + 2 * hidden * FP16)
    extra, largest = attention_extra(mode, batch, config.num_heads, config.num_patches)
    attention_live = tokens * (d * FP16 + 3 * d * FP16 + d * FP16) + extra
    pixels = batch * config.img_size[0] * config.img_size[1]
    io = pixels * (len(config.variables) + len(config.outputs)) * FP32
    activations = max(mlp_live, attention_live) + io
    largest = max(largest, tokens * hidden, pixels * len(config.variables))
    return EngineMemory(mode, config.num_patches, batch, weights, activations, extra, WORKSPACE_BYTES,
                        CONTEXT_BYTES, largest)  # fmt: skip


def grid_config(config: ModelConfig, patches: int) -> ModelConfig:
    """`config` on a grid of `patches` patches, rows x cols = r x 2r (the full preset's 1:2 aspect)."""
    from climax_deploy.bench.scaling import patch_grid

    rows, cols = patch_grid(patches)
    p = config.patch_size
    return config.on_image((rows * p, cols * p), f"{config.name}-{patches}")


def largest_fit(config: ModelConfig, mode: str, budget: int = GPU_BYTES, batch: int = 1) -> int:
    """The most patches on an r x 2r grid whose engine fits in `budget` bytes (0 if none does)."""
    def fits(r: int) -> bool:
        return engine_memory(grid_config(config, 2 * r * r), mode, batch).total <= budget

    if not fits(1):
        return 0
    lo, hi = 1, 2
    while fits(hi):
        lo, hi = hi, hi * 2
        if hi > 2**20:  # O(N) modes fit millions of patches: report the bound, not an endless search
            return 2 * lo * lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return 2 * lo * lo


def memory_table(config: ModelConfig | None = None, patches: tuple[int, ...] = PATCHES, batch: int = 1,
                 budget: int = GPU_BYTES) -> dict[str, Any]:  # fmt: skip
    """The model at each patch count and mode, and the largest grid each mode fits in `budget`."""
    config = config or PRESETS["full"]
    rows = [engine_memory(grid_config(config, n), mode, batch).to_dict() for n in patches for mode in MODES]
    fits = {mode: largest_fit(config, mode, budget, batch) for mode in MODES}
    return {"config": config.to_dict(), "batch": batch, "budget": budget, "workspace": WORKSPACE_BYTES,
            "context": CONTEXT_BYTES, "rows": rows, "largest_fit": fits}  # fmt: skip


def format_memory_table(table: dict[str, Any]) -> str:
    """The memory model as a Markdown table (GiB), then the largest grid per mode."""
    from climax_deploy.bench.scaling import patch_grid

    cfg = table["config"]
    lines = [f"TensorRT fp16 engine memory, computed from shapes (not measured): width {cfg['embed_dim']}, "
             f"{cfg['num_heads']} heads, depth {cfg['depth']}, batch {table['batch']}; workspace "
             f"{table['workspace'] / GiB:g} GiB and context {table['context'] / GiB:g} GiB assumed.", "",
             "| patches (grid) | mode | weights GiB | activations GiB | of which attention GiB | total GiB | largest tensor |",
             "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for r in table["rows"]:
        rows, cols = patch_grid(r["patches"])
        big = r["largest_tensor_elements"]
        flag = " (>= 2^31)" if big >= INT32_ELEMENTS else ""
        lines.append(f"| {r['patches']} ({rows} x {cols}) | {r['mode']} | {r['weights'] / GiB:.2f} | "
                     f"{r['activations'] / GiB:.2f} | {r['attention_extra'] / GiB:.2f} | "
                     f"{r['total'] / GiB:.2f} | {big:.2g}{flag} |")  # fmt: skip
    lines += ["", f"Largest r x 2r patch grid in {table['budget'] / GiB:g} GiB:"]
    for mode, n in table["largest_fit"].items():
        rows, cols = patch_grid(n) if n else (0, 0)
        lines.append(f"  {mode:<15} {n:>10} patches ({rows} x {cols}; "
                     f"{math.sqrt(n / 8192):.1f}x the full preset's resolution per axis)")  # fmt: skip
    return "\n".join(lines)
