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
# shared memory every CUDA GPU grants without cuFuncSetAttribute, and --hardware-compat ampere+ caps
# the driver's reserved shared memory (1 KiB per block on compute capability >= 8.0) plus the
# kernel's at 48 KiB (NvInfer.h v11.1, HardwareCompatibilityLevel::kAMPERE_PLUS): the AOT kernel may
# use 47 KiB.
AOT_SHARED_MEM_LIMIT = 47 * 1024
# Head dims the precompiled kernel is built for: multiples of 16 (q/k/v loads vectorise) up to 128.
# Each is checked by tests/test_aot_registers.py with the bundled ptxas for sm_80 and sm_90: shared
# memory, no spills, >= 2 resident blocks per SM. Wider heads (144..256) spill or exceed 47 KiB at
# every tile that tl.dot accepts; they run with --attention inline or native.
AOT_HEAD_DIMS: tuple[int, ...] = tuple(range(16, 129, 16))
# Registers per SM on compute capability 8.0 and 9.0 (CUDA programming guide, compute capabilities
# table: 64 K 32-bit registers per SM, at most 255 per thread, allocated per warp in units of 256).
REGISTERS_PER_SM = 65536
REGISTER_UNIT_PER_WARP = 256


def check_aot_head_dim(head_dim: int) -> None:
    """BadInputError unless the precompiled (TensorRT plugin) kernel is built for `head_dim`."""
    if head_dim not in AOT_HEAD_DIMS:
        raise BadInputError(
            f"--attention plugin supports head dims {AOT_HEAD_DIMS[0]}..{AOT_HEAD_DIMS[-1]} in steps of 16, got "
            f"{head_dim}; use --attention inline or native"
        )


def aot_tile_sizes(head_dim: int, dtype: str) -> tuple[int, int, int, int]:
    """(block_m, block_n, num_warps, num_stages) for the TensorRT plugin's precompiled kernel.

    Chosen with Triton 3.9's bundled ptxas -v for sm_80 and sm_90 so that every AOT_HEAD_DIMS x dtype
    kernel fits AOT_SHARED_MEM_LIMIT, spills no registers and leaves room for >= 2 blocks per SM
    (docs/kernels.md has the table). 16-bit heads <= 64: 128 x 32 tiles, 8 warps (128 registers);
    wider: 64 x 32, 4 warps (the 128-row tile spills at head dim 64 with 4 warps, and at 96 uses 194
    registers x 8 warps: one block per SM). fp32: 32 x 32, or 32 x 16 above 96. The CUDA launcher's
    fp16 128 x 64 x 3 stages needs 97 KiB. compile_ptx checks the shared-memory limit on every build.
    """
    if dtype not in DTYPES:
        raise BadInputError(f"elevation attention supports q/k/v dtypes {DTYPES}, got {dtype!r}")
    check_aot_head_dim(head_dim)
    split = split_head_dim(head_dim)
    width = split.d0 + split.d1
    if dtype == "fp32":
        return 32, 32 if width <= 96 else 16, 4, 2
    if width <= 64:
        return 128, 32, 8, 2
    return 64, 32, 4, 2


def blocks_per_sm(registers: int, num_warps: int) -> int:
    """Resident blocks per SM that `registers` per thread allow (compute capability 8.0 / 9.0)."""
    per_warp = -(-registers * 32 // REGISTER_UNIT_PER_WARP) * REGISTER_UNIT_PER_WARP
    return REGISTERS_PER_SM // per_warp // num_warps


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
