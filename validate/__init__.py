"""Parity harness: terrains, synthetic inputs, float64-anchored metrics and tolerances, `check-parity` and
its pictures (`write_parity_report`)."""

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
from climax_deploy.validate.parity import ParityFields, ParityReport, format_report, run_parity
from climax_deploy.validate.parity_report import write_parity_report
from climax_deploy.validate.terrain import BUILTIN_TERRAINS, load_terrain_file, make_terrain

__all__ = [
    "BUILTIN_TERRAINS",
    "ErrorMetrics",
    "ParityFields",
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
    "write_parity_report",
]
