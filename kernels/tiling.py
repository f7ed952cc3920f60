"""Launch parameters of the fused elevation-attention kernel: tiles, head-dim split, warps, grid.

Pure Python (no torch, no Triton) so the PyTorch launcher, the TensorRT plugin's ahead-of-time
compilation and the tests all derive the same numbers from one place.
"""

from __future__ import annotations

from dataclasses import dataclass

from climax_deploy.errors import BadInputError

# Head dims the kernel is built and tested for; others in [MIN_HEAD_DIM, MAX_HEAD_DIM] also work.
TESTED_HEAD_DIMS: tuple[int, ...] = (64, 96, 128)
MIN_HEAD_DIM = 16
MAX_HEAD_DIM = 256
DTYPES: tuple[str, ...] = ("fp16", "bf16", "fp32")


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _next_pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


@dataclass(frozen=True)
class HeadSplit:
    """The head dim as at most two power-of-two tiles, e.g. 96 = 64 + 32, so nothing is padded.

    `d1 == 0` means one tile; `padded` means one tile of `d0 > head_dim` with the excess masked
    (for head dims that are not a sum of two powers of two >= 16, such as 112).
    """

    head_dim: int
    d0: int
    d1: int

    @property
    def padded(self) -> bool:
        return self.d0 + self.d1 > self.head_dim


def split_head_dim(head_dim: int) -> HeadSplit:
    """Split `head_dim` into tiles that tl.dot accepts (powers of two, at least 16)."""
    if not MIN_HEAD_DIM <= head_dim <= MAX_HEAD_DIM:
        raise BadInputError(
            f"elevation attention supports head dims {MIN_HEAD_DIM}..{MAX_HEAD_DIM}, got {head_dim}"
        )
    if _is_pow2(head_dim):
        return HeadSplit(head_dim, head_dim, 0)
    d0 = 1 << (head_dim.bit_length() - 1)
    rest = head_dim - d0
    if rest >= MIN_HEAD_DIM and _is_pow2(rest):
        return HeadSplit(head_dim, d0, rest)
    return HeadSplit(head_dim, _next_pow2(head_dim), 0)


@dataclass(frozen=True)
class LaunchConfig:
    """Everything a launch needs besides the tensors: constexprs, warps, stages, grid."""

    head: HeadSplit
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    dot_precision: str
    upcast_dot: bool
    grid: tuple[int, int, int]

    def constexprs(self) -> dict[str, int | str | bool]:
        """The kernel's compile-time arguments, by name."""
        return {
            "HEAD_DIM": self.head.head_dim,
            "D0": self.head.d0,
            "D1": self.head.d1,
            "BLOCK_M": self.block_m,
            "BLOCK_N": self.block_n,
            "DOT_PRECISION": self.dot_precision,
            "UPCAST_DOT": self.upcast_dot,
        }


def cdiv(a: int, b: int) -> int:
    """Ceiling division."""
    return -(-a // b)


def tile_sizes(head_dim: int, dtype: str, interpret: bool = False) -> tuple[int, int, int, int]:
    """(block_m, block_n, num_warps, num_stages) for a dtype and head dim.

    GPU: 128 x 64 tiles for 16-bit inputs (tensor-core friendly, K/V stages fit Hopper's shared
    memory), 64 x 32 for fp32. Interpreter: 32 x 32 so small test sizes still cross several tiles.
    """
    if dtype not in DTYPES:
        raise BadInputError(f"elevation attention supports q/k/v dtypes {DTYPES}, got {dtype!r}")
    if interpret:
        return 32, 32, 4, 1
    if dtype == "fp32":
        return 64, 32, 4, 2
    wide = split_head_dim(head_dim).d0 + split_head_dim(head_dim).d1 > 64
    return 128, 64, 8 if wide else 4, 2 if head_dim > 128 else 3


# Ahead-of-time (TensorRT plugin) compilation. TensorRT's KernelLaunchParams carries a byte count
# only; nothing in tensorrt.plugin (v10.13-v11.1) opts a kernel into more than the 48 KiB of dynamic
# shared memory every CUDA GPU grants without cuFuncSetAttribute, so the AOT tiles must fit 48 KiB.
AOT_SHARED_MEM_LIMIT = 48 * 1024


def aot_tile_sizes(head_dim: int, dtype: str) -> tuple[int, int, int, int]:
    """(block_m, block_n, num_warps, num_stages) for the TensorRT plugin's precompiled kernel.

    Narrower tiles and two stages, so shared memory stays within AOT_SHARED_MEM_LIMIT at sm_80
    (Triton 3.9, head dim 128: fp16 64 x 32 tiles 36 KiB, fp32 32 x 16 tiles 34 KiB; the CUDA
    launcher's fp16 128 x 64 x 3 stages needs 97 KiB). compile_ptx checks the limit on every build.
    """
    if dtype not in DTYPES:
        raise BadInputError(f"elevation attention supports q/k/v dtypes {DTYPES}, got {dtype!r}")
    split = split_head_dim(head_dim)
    width = split.d0 + split.d1
    if dtype == "fp32":
        return 32, 32 if width <= 96 else 16, 4, 2
    return 128 if width <= 96 else 64, 32, 8 if width > 64 else 4, 2


def dot_precision(dtype: str) -> str:
    """tl.dot's input precision: fp32 stays fp32 (no silent TF32); 16-bit inputs are exact in tf32."""
    return "ieee" if dtype == "fp32" else "tf32"


def aot_launch_config(head_dim: int, dtype: str) -> LaunchConfig:
    """Launch configuration of the precompiled kernel; its grid is a placeholder (TensorRT computes it)."""
    bm, bn, warps, stages = aot_tile_sizes(head_dim, dtype)
    return LaunchConfig(
        head=split_head_dim(head_dim),
        block_m=bm,
        block_n=bn,
        num_warps=warps,
        num_stages=stages,
        dot_precision=dot_precision(dtype),
        upcast_dot=False,
        grid=(1, 1, 1),
    )


def launch_config(
    batch: int,
    heads: int,
    seq_len: int,
    head_dim: int,
    dtype: str,
    interpret: bool = False,
    block_m: int | None = None,
    block_n: int | None = None,
) -> LaunchConfig:
    """Launch configuration for q/k/v [batch, heads, seq_len, head_dim] of `dtype`.

    Grid: one program per (query tile, batch x head); every program streams all key tiles.
    """
    if batch < 1 or heads < 1 or seq_len < 1:
        raise BadInputError(f"expected batch, heads, seq_len >= 1, got {batch}, {heads}, {seq_len}")
    bm, bn, warps, stages = tile_sizes(head_dim, dtype, interpret)
    bm = block_m or bm
    bn = block_n or bn
    for name, size in (("block_m", bm), ("block_n", bn)):
        if size < 16 or not _is_pow2(size):
            raise BadInputError(f"{name} must be a power of two >= 16, got {size}")
    if batch * heads > 65535:
        raise BadInputError(f"batch x heads must be <= 65535 (CUDA grid y), got {batch * heads}")
    return LaunchConfig(
        head=split_head_dim(head_dim),
        block_m=bm,
        block_n=bn,
        num_warps=warps,
        num_stages=stages,
        dot_precision=dot_precision(dtype),
        upcast_dot=interpret and dtype == "bf16",  # works around the interpreter's bf16 tl.dot
        grid=(cdiv(seq_len, bm), batch * heads, 1),
    )
