"""Parity harness: terrains, synthetic inputs, float64-anchored metrics and tolerances, and `check-parity`."""

from __future__ import annotations

from climax_deploy.validate.metrics import (
    TOLERANCES,
    ErrorMetrics,
    Tolerance,
    describe_tolerances,
    error_metrics,
    signal_fidelity,
    tolerance,
    tolerances,
)
from climax_deploy.validate.parity import ParityReport, format_report, run_parity
from climax_deploy.validate.terrain import BUILTIN_TERRAINS, load_terrain_file, make_terrain

__all__ = [
    "BUILTIN_TERRAINS",
    "ErrorMetrics",
    "ParityReport",
    "TOLERANCES",
    "Tolerance",
    "describe_tolerances",
    "error_metrics",
    "format_report",
    "load_terrain_file",
    "make_terrain",
    "run_parity",
    "signal_fidelity",
    "tolerance",
    "tolerances",
]
