"""Performance lab: benchmarks, scaling over grid sizes, FLOP counting, the memory model and the GPU check.

The parity harness (does an artifact compute what the PyTorch reference computes?) is validate/;
this area measures how fast and how large: `climax-bench`, `climax-bench-attention`, `climax-gpu-check`.
"""
