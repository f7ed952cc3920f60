"""`climax-forecast`: an analysis file in physical units -> a forecast file (NetCDF or zarr)."""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from climax_deploy.cli import EXIT_OK, ArgParser, run_cli


def parse_lead_times(text: str) -> list[float]:
    """'12,24,48' -> [12.0, 24.0, 48.0]."""
    try:
        leads = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated hours such as 12,24,48,96, got {text!r}") from None
    if not leads:
        raise argparse.ArgumentTypeError("expected at least one lead time in hours")
    return leads


def build_parser() -> ArgParser:
    p = ArgParser(
        prog="climax-forecast",
        description=(
            "Forecast the six pollutants from an analysis file in physical units. Variables are found in "
            "--analysis, then --static (elevation, population): by name, then CF standard_name, then ECMWF/CAMS "
            "short name (u10, v10, t2m, r2, sp, pm2p5, go3; docs/operations.md), or as --rename says; "
            "lat2d/lon2d come from the coordinates when "
            "absent. Inputs are standardised with the model's manifest stats, outputs inverted to physical "
            "units, written atomically as NetCDF (.nc) or zarr (.zarr) with dims (lead_time, lat, lon). "
            "Needs the 'io' extra (xarray, netCDF4, zarr)."
        ),
    )
    p.add_argument(
        "--model", type=Path, required=True, help="model artifact: .onnx (ONNX Runtime) or .engine (TensorRT)"
    )
    p.add_argument("--analysis", type=Path, required=True, help="analysis file (.nc or .zarr) with named variables")
    p.add_argument("--static", type=Path, help="static fields file (.nc or .zarr): elevation, population, mask")
    p.add_argument("--lead-times", type=parse_lead_times, default=[12.0, 24.0, 48.0, 96.0], metavar="H,H,...",
                   help="lead times in hours (default 12,24,48,96)")  # fmt: skip
    p.add_argument("-o", "--output", type=Path, required=True, help="forecast file: .nc (NetCDF) or .zarr")
    p.add_argument("--regrid", choices=["bilinear"], default=None,
                   help="resample an analysis that is not on the model grid (default: refuse with the grid expected)")  # fmt: skip
    p.add_argument(
        "--mask", metavar="VAR", help="validity mask variable (in --static or --analysis); cells < 0.5 -> NaN"
    )
    p.add_argument("--allow-implausible", action="store_true",
                   help="research runs: accept inputs outside the plausible ranges (schema.PLAUSIBLE_RANGES: "
                        "temperature 150..350 K, concentrations 0..1e5 ug m-3, ...) and lead times beyond 240 h")  # fmt: skip
    p.add_argument("--rename", action="append", default=[], metavar="FILE_NAME=MODEL_NAME",
                   help="read the file's variable FILE_NAME as the model's MODEL_NAME, e.g. t2m_corrected=temp; "
                        "repeatable; first in the lookup order")  # fmt: skip
    p.add_argument("--convert-mixing-ratios", action="store_true",
                   help="convert pollutants given as mass mixing ratios (kg kg-1: x dry-air density p / (R_d T)) or "
                        "volume mixing ratios (ppb, mol mol-1: x p M / (R T)) to ug m-3 with the file's surface "
                        "pressure and temperature; the assumptions are printed and written into the forecast "
                        "(default: refuse them)")  # fmt: skip
    p.add_argument("--time-index", type=int, default=None, help="which analysis time to use when the file has several")
    p.add_argument("--batch-size", type=int, default=None,
                   help="lead times per model call (default: the model's batch limit, or 4 for a dynamic batch)")  # fmt: skip
    p.add_argument("--backend", choices=["auto", "onnxruntime", "openvino"], default="auto",
                   help="auto (default): by suffix (.onnx -> ONNX Runtime, .engine -> TensorRT); openvino: the "
                        ".onnx on OpenVINO (CPU, fp32; pip install 'climax-deploy[openvino]')")  # fmt: skip
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime (or OpenVINO) intra-op threads")
    p.add_argument("--providers", default="auto", help="ONNX Runtime providers: auto (default), cpu or cuda")
    p.add_argument("--quicklook", type=Path, metavar="FILE.png",
                   help="also draw the forecast as maps, one row per pollutant and one column per lead time, units "
                        "in the colour bars, masked cells grey (needs the 'plot' extra)")  # fmt: skip
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    return p


def summary_table(forecast: Any) -> list[str]:
    """One line per pollutant: units, min, mean and max over the forecast (NaN outside a mask ignored)."""
    rows = [f"{'pollutant':<10} {'units':<10} {'min':>10} {'mean':>10} {'max':>10}"]
    for name, da in forecast.data_vars.items():
        values = np.asarray(da.values, dtype=np.float64)
        if np.isfinite(values).any():
            lo, mean, hi = float(np.nanmin(values)), float(np.nanmean(values)), float(np.nanmax(values))
        else:
            lo = mean = hi = float("nan")
        rows.append(f"{name:<10} {da.attrs.get('units', ''):<10} {lo:>10.3g} {mean:>10.3g} {hi:>10.3g}")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from climax_deploy.errors import BadInputError
    from climax_deploy.forecast import PhysicalForecaster, file_format, open_dataset, select_time, write_dataset
    from climax_deploy.forecast.variables import parse_renames

    rename = parse_renames(args.rename)

    output_format = file_format(args.output)  # fail fast on a bad output name
    from climax_deploy.artifacts import check_outputs_distinct, check_writable

    inputs = {"--model": args.model, "--analysis": args.analysis, "--static": args.static}
    check_outputs_distinct(inputs, {"-o": args.output, "--quicklook": args.quicklook})
    check_writable(args.output, folder_ok=output_format == "zarr")  # a zarr store is a folder
    check_writable(args.quicklook)
    if args.quicklook is not None:
        from climax_deploy.figures import check_png_path, require_matplotlib

        check_png_path(args.quicklook, "--quicklook")
        require_matplotlib()
    if not args.model.is_file():
        raise BadInputError(f"model file {args.model} does not exist")
    say = (
        (lambda msg: None)
        if args.quiet
        else (lambda msg: print(f"[climax-forecast] {msg}", file=sys.stderr, flush=True))
    )
    analysis = select_time(open_dataset(args.analysis), args.time_index, str(args.analysis))
    static = open_dataset(args.static) if args.static is not None else None
    load_options: dict[str, Any] = {}
    if args.backend == "openvino":
        if args.providers != "auto":
            raise BadInputError(f"--providers {args.providers} is an ONNX Runtime option; --backend openvino runs on the CPU")
        load_options = {"backend": "openvino", "threads": args.threads}
    elif args.model.suffix.lower() == ".onnx":
        load_options = {"providers": args.providers, "threads": args.threads}
    began = time.perf_counter()
    forecaster_options = {"batch_size": args.batch_size, "allow_implausible": args.allow_implausible}
    with PhysicalForecaster(args.model, **forecaster_options, **load_options) as forecaster:
        with warnings.catch_warnings(record=True) as caught:  # e.g. a unit assumed: one line each, even with -q
            warnings.simplefilter("always", UserWarning)
            prepared = forecaster.prepare(analysis, static, regrid=args.regrid, mask=args.mask, rename=rename,
                                          convert_mixing_ratios=args.convert_mixing_ratios)  # fmt: skip
        for warning in caught:
            print(f"[climax-forecast] warning: {warning.message}", file=sys.stderr, flush=True)
        for name, where in prepared.found.items():
            say(f"{name} = {where}")
        for conversion in prepared.conversions:  # assumptions: shown even with -q, like the warnings
            print(f"[climax-forecast] converted {conversion}", file=sys.stderr, flush=True)
        if prepared.regridded:
            say(f"regridded the analysis ({args.regrid}) onto {prepared.grid.describe()}")
        per_lead: dict[float, float] = {}

        def on_batch(leads: Sequence[float], seconds: float) -> None:
            for h in leads:
                per_lead[h] = seconds / len(leads)
            say(f"lead time {', '.join(f'{h:g}' for h in leads)} h: {seconds:.2f} s "
                f"({len(per_lead)}/{len(args.lead_times)})")  # fmt: skip

        y = forecaster.predict_physical(prepared, args.lead_times, on_batch)
        forecast = forecaster.to_dataset(y, prepared, [float(h) for h in args.lead_times], args.regrid)
    write_dataset(forecast, args.output)
    if args.quicklook is not None:
        from climax_deploy.forecast.quicklook import quicklook

        quicklook(forecast, args.quicklook)
    total = time.perf_counter() - began
    mean_lead = sum(per_lead.values()) / len(per_lead)
    rows, cols = prepared.grid.shape
    print(f"wrote {args.output}: {len(args.lead_times)} lead times ({', '.join(f'{h:g}' for h in args.lead_times)} h) "
          f"on {rows} x {cols}, {mean_lead:.2f} s per lead time, {total:.1f} s in all")  # fmt: skip
    if prepared.mask is not None:
        print(f"cells outside the validity mask {prepared.mask_name!r} are NaN ({int((~prepared.mask).sum())} cells)")
    print("\n".join(summary_table(forecast)))
    if args.quicklook is not None:
        print(f"wrote {args.quicklook}")
    return EXIT_OK


def entry() -> None:
    sys.exit(run_cli("climax-forecast", main))


if __name__ == "__main__":
    entry()
