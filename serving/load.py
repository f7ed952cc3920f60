"""`climax-load-test`: concurrent gRPC clients against a loopback Triton server, bounded in requests
and time; reports p50/p90/p99 latency and throughput. Optionally starts the server itself (--serve).
"""

from __future__ import annotations

import ipaddress
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from climax_deploy.cli import EXIT_FAILED, EXIT_OK, ArgParser, run_cli
from climax_deploy.errors import BadInputError
from climax_deploy.optional import TRITONCLIENT_GRPC
from climax_deploy.schema import INPUT_NAME, LEAD_TIMES_NAME, OUTPUT_NAME

MAX_REFUSAL_CHARS = 600  # Triton's own shape message is ~480 characters; a traceback is ~1,900


def check_loopback(url: str) -> tuple[str, int]:
    """'127.0.0.1:8001' -> (host, port); anything that is not a loopback address is refused."""
    host, sep, port = url.rpartition(":")
    if not sep or not port.isdigit():
        raise BadInputError(f"--url must be HOST:PORT (gRPC), got {url!r}")
    host = host.strip("[]")
    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, int(port), proto=socket.IPPROTO_TCP)}
    except socket.gaierror as exc:
        raise BadInputError(f"cannot resolve {host!r}: {exc}") from exc
    if not addresses or not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise BadInputError(f"the load test runs against loopback only (127.0.0.1, ::1, localhost), got {host!r}")
    return host, int(port)


@dataclass
class LoadResult:
    """Latencies of completed requests and what they add up to."""

    url: str
    model_name: str
    concurrency: int
    batch: int
    requests: int
    errors: int
    wall_s: float
    latencies_ms: list[float] = field(repr=False)
    first_error: str | None = None
    bad_clients: int = 0  # clients that sent only requests the server must refuse (NaN lead times)
    refused: int = 0  # their requests refused as the server should: INVALID_ARGUMENT, one line
    bad_accepted: int = 0  # their requests answered with an output, or refused otherwise
    first_refusal: str | None = None
    first_bad_accepted: str | None = None

    @property
    def passed(self) -> bool:
        """Every good request answered, every bad one refused alone and cleanly."""
        return self.errors == 0 and self.bad_accepted == 0 and bool(self.latencies_ms)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    @property
    def throughput_rps(self) -> float:
        return len(self.latencies_ms) / self.wall_s if self.wall_s > 0 else float("nan")

    def summary(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "latencies_ms"}
        out.update(
            completed=len(self.latencies_ms),
            p50_ms=self.percentile(50), p90_ms=self.percentile(90), p99_ms=self.percentile(99),
            mean_ms=float(np.mean(self.latencies_ms)) if self.latencies_ms else float("nan"),
            throughput_rps=self.throughput_rps, throughput_samples_per_s=self.throughput_rps * self.batch,
        )  # fmt: skip
        return out


def model_input_dims(client: Any, model_name: str) -> tuple[int, ...]:
    """x's per-sample dims [V, H, W] from the server's model config."""
    config = client.get_model_config(model_name).config
    for tensor in config.input:
        if tensor.name == INPUT_NAME:
            return tuple(int(d) for d in tensor.dims)
    raise BadInputError(f"model {model_name!r} has no input {INPUT_NAME!r}; is it a climax-deploy model?")


def make_inputs(grpcclient: Any, dims: Sequence[int], batch: int, seed: int, bad: bool = False) -> list[Any]:
    """Random standardised fields and lead times; `bad`: NaN lead times, which the server must refuse."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *dims)).astype(np.float32)  # standardised fields
    lead = rng.choice(np.array([12.0, 24.0, 48.0, 96.0], dtype=np.float32), size=(batch, 1))
    if bad:
        lead[:] = np.nan
    ix = grpcclient.InferInput(INPUT_NAME, list(x.shape), "FP32")
    ix.set_data_from_numpy(x)
    il = grpcclient.InferInput(LEAD_TIMES_NAME, list(lead.shape), "FP32")
    il.set_data_from_numpy(lead)
    return [ix, il]


def run_load(
    url: str,
    model_name: str = "climax",
    concurrency: int = 4,
    requests: int = 64,
    duration_s: float = 60.0,
    batch: int = 1,
    warmup: int = 1,
    timeout_s: float = 600.0,
    bad_clients: int = 0,
    per_client: bool = False,
) -> LoadResult:
    """`concurrency` threads send up to `requests` requests in all (`per_client`: each), stopping at
    `duration_s`.

    The first `bad_clients` of them send NaN lead times: the server must refuse each of those alone
    (INVALID_ARGUMENT, one line, no traceback) while every request of the others succeeds."""
    if concurrency < 1 or requests < 1 or batch < 1 or duration_s <= 0:
        raise BadInputError("concurrency, requests and batch must be >= 1 and duration > 0")
    if not 0 <= bad_clients < concurrency:
        raise BadInputError(f"bad clients must be 0..{concurrency - 1} (at least one good client), got {bad_clients}")
    check_loopback(url)
    grpcclient = TRITONCLIENT_GRPC.load()
    with grpcclient.InferenceServerClient(url) as probe:
        try:
            ready = probe.is_model_ready(model_name)
        except Exception as exc:  # InferenceServerException: UNAVAILABLE when nothing listens on `url`
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise BadInputError(
                f"cannot reach a Triton server at {url} ({first}); expected one listening there "
                "(start it with climax-serve, or pass --serve MODEL)"
            ) from None
        if not ready:
            raise BadInputError(f"model {model_name!r} is not ready on {url}")
        dims = model_input_dims(probe, model_name)
        for _ in range(warmup):  # first requests pay for lazy initialisation; not counted
            probe.infer(model_name, make_inputs(grpcclient, dims, batch, 0), client_timeout=timeout_s)
    lock = threading.Lock()
    issued = 0
    latencies: list[float] = []
    errors: list[str] = []
    refusals: list[str] = []
    bad_accepted: list[str] = []
    deadline = time.monotonic() + duration_s

    def client_loop(worker: int) -> None:
        nonlocal issued
        bad = worker < bad_clients
        inputs = make_inputs(grpcclient, dims, batch, seed=worker + 1, bad=bad)
        outputs = [grpcclient.InferRequestedOutput(OUTPUT_NAME)]
        mine = 0
        with grpcclient.InferenceServerClient(url) as client:
            while True:
                with lock:
                    if (mine if per_client else issued) >= requests or time.monotonic() >= deadline:
                        return
                    issued += 1
                    mine += 1
                began = time.perf_counter()
                try:
                    client.infer(model_name, inputs, outputs=outputs, client_timeout=timeout_s)
                except Exception as exc:  # tritonclient raises InferenceServerException and grpc errors
                    with lock:
                        if not bad:
                            errors.append(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                        elif is_clean_refusal(exc):
                            refusals.append(str(exc))
                        else:
                            bad_accepted.append(f"refused unclearly: {str(exc)[:200]!r}")
                    continue
                if bad:
                    with lock:
                        bad_accepted.append("answered with an output")
                    continue
                elapsed_ms = (time.perf_counter() - began) * 1e3
                with lock:
                    latencies.append(elapsed_ms)

    threads = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(concurrency)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    return LoadResult(url, model_name, concurrency, batch, issued, len(errors), wall, latencies,
                      errors[0] if errors else None, bad_clients, len(refusals), len(bad_accepted),
                      refusals[0] if refusals else None, bad_accepted[0] if bad_accepted else None)  # fmt: skip


def is_clean_refusal(exc: Exception) -> bool:
    """INVALID_ARGUMENT with one line that names no traceback and no file."""
    status = exc.status() if callable(getattr(exc, "status", None)) else None
    text = str(exc)
    return (
        status == "StatusCode.INVALID_ARGUMENT" and "\n" not in text.strip() and "Traceback" not in text
        and ".py" not in text and len(text) <= MAX_REFUSAL_CHARS
    )  # fmt: skip


def build_parser() -> ArgParser:
    p = ArgParser(
        prog="climax-load-test",
        description=(
            "Load-test a climax-deploy model on Triton Inference Server over gRPC, loopback only: "
            "concurrent clients, bounded by --requests and --duration; prints p50/p90/p99 latency and "
            "throughput. Either target a running server (--url) or start one (--serve MODEL, run by "
            "--server-python, a Python >= 3.12 environment with the 'serve' extra)."
        ),
    )
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="gRPC address of a running server, e.g. 127.0.0.1:8001")
    target.add_argument("--serve", type=Path, metavar="MODEL", help="start climax-serve on this model first")
    p.add_argument("--server-python", default=sys.executable, help="Python that runs climax-serve (default: this one)")
    p.add_argument("--instances", type=int, default=1, help="model instances when starting the server (default 1)")
    p.add_argument("--max-batch", type=int, default=4, help="server's dynamic batch limit (default 4)")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads per instance")
    p.add_argument("--model-name", default="climax", help="model name on the server (default climax)")
    p.add_argument("-c", "--concurrency", type=int, default=4, help="concurrent clients (default 4)")
    p.add_argument("-n", "--requests", type=int, default=64, help="requests in all (default 64)")
    p.add_argument("--per-client", action="store_true", help="--requests is per client, not in all")
    p.add_argument(
        "--duration", type=float, default=120.0, help="stop issuing requests after this many s (default 120)"
    )
    p.add_argument("--batch", type=int, default=1, help="samples per request (default 1)")
    p.add_argument(
        "--bad-clients", type=int, default=0,
        help="of the clients, this many send NaN lead times: each must be refused alone (INVALID_ARGUMENT, "
        "one line) while every good request succeeds (default 0)",
    )  # fmt: skip
    p.add_argument("--json", type=Path, help="write the summary as JSON here")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    TRITONCLIENT_GRPC.load()  # the `serve` extra, named before the server starts or anything is printed
    if args.serve is not None:
        from climax_deploy.serving.launch import ServerProcess

        print(f"[climax-load-test] starting climax-serve on {args.serve} ...", file=sys.stderr, flush=True)
        with ServerProcess(args.serve, python=args.server_python, model_name=args.model_name,
                           instances=args.instances, max_batch=args.max_batch, threads=args.threads) as server:  # fmt: skip
            result = _run(args, server.grpc_url)
    else:
        result = _run(args, args.url)
    summary = result.summary()
    if args.serve is not None:
        summary.update(model_file=str(args.serve), instances=args.instances, max_batch=args.max_batch)
    print(
        f"{summary['completed']} requests ({result.batch} sample(s) each, {result.concurrency} clients) in "
        f"{result.wall_s:.1f} s: p50 {summary['p50_ms']:.1f} ms, p90 {summary['p90_ms']:.1f} ms, "
        f"p99 {summary['p99_ms']:.1f} ms, {summary['throughput_rps']:.2f} req/s, "
        f"{summary['throughput_samples_per_s']:.2f} samples/s, {result.errors} errors"
        + (f"; bad clients: {result.refused} refused, {result.bad_accepted} not refused cleanly"
           if result.bad_clients else "")
    )  # fmt: skip
    if result.first_error:
        print(f"first error: {result.first_error}", file=sys.stderr)
    if result.first_refusal:
        print(f"first refusal: {result.first_refusal}", file=sys.stderr)
    if result.first_bad_accepted:
        print(f"first bad request not refused cleanly: {result.first_bad_accepted}", file=sys.stderr)
    if args.json is not None:
        from climax_deploy.artifacts import write_json_atomic

        write_json_atomic(args.json, summary)
    return EXIT_OK if result.passed else EXIT_FAILED


def _run(args: Any, url: str) -> LoadResult:
    print(f"[climax-load-test] {args.concurrency} clients, up to {args.requests} requests or {args.duration:g} s "
          f"against {url} ...", file=sys.stderr, flush=True)  # fmt: skip
    return run_load(url, args.model_name, args.concurrency, args.requests, args.duration, args.batch,
                    bad_clients=args.bad_clients, per_client=args.per_client)  # fmt: skip


def entry() -> None:
    sys.exit(run_cli("climax-load-test", main))


if __name__ == "__main__":
    entry()
