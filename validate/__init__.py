"""Parity harness: terrains, synthetic inputs, metrics, and `check-parity`."""

from __future__ import annotations

from climax_deploy.validate.metrics import (
    TOLERANCES,
    ErrorMetrics,
    Tolerance,
    error_metrics,
    signal_fidelity,
    tolerance,
)
from climax_deploy.validate.parity import ParityReport, format_report, run_parity
from climax_deploy.validate.terrain import BUILTIN_TERRAINS, load_terrain_file, make_terrain

__all__ = [
    "BUILTIN_TERRAINS",
    "ErrorMetrics",
    "ParityReport",
    "TOLERANCES",
    "Tolerance",
    "error_metrics",
    "format_report",
    "load_terrain_file",
    "make_terrain",
    "run_parity",
    "signal_fidelity",
    "tolerance",
]
