"""Serving on Triton Inference Server (the `serve` extra: nvidia-pytriton, tritonclient; Python >= 3.12
for the server). Modules, imported on demand so `python -m` runs them cleanly:

  server  `climax-serve`: runners bound to Triton with dynamic batching (ServeOptions, serve)
  gate       the model clients call: checks each request alone (INVALID_ARGUMENT), forwards good ones
  addresses  ports and host checked before anything starts
  workspace  locked work folders; those of killed servers removed at the next start
  launch  ServerProcess: start climax-serve on loopback, wait until ready, always stop it
  load    `climax-load-test`: concurrent gRPC clients, p50/p99 latency and throughput (run_load)
"""

from __future__ import annotations
