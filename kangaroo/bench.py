"""``kangaroo bench NAME``: benchmarks that measure a ratio against a baseline in the same run.

Each benchmark registers a runner (returns a JSON-able report) and a formatter (a
markdown table for humans). ``--json`` prints the report instead of the table.
"""

from __future__ import annotations

import json

from .registry import Registry

BENCHMARKS: Registry = Registry("benchmark")


@BENCHMARKS.register("decode")
def _decode(args) -> tuple[dict, str]:
    from .video.bench import bench_decode, format_decode

    report = bench_decode(workdir=args.workdir, quick=args.quick, repeats=args.repeats, progress=not args.json)
    return report, format_decode(report)


@BENCHMARKS.register("sampler")
def _sampler(args) -> tuple[dict, str]:
    from .video.bench_sampler import bench_sampler, format_sampler

    report = bench_sampler(workdir=args.workdir, quick=args.quick, progress=not args.json)
    return report, format_sampler(report)


@BENCHMARKS.register("model")
def _model(args) -> tuple[dict, str]:
    from .model.bench import bench_model, format_model

    report = bench_model(workdir=args.workdir, progress=not args.json)
    return report, format_model(report)


@BENCHMARKS.register("chat")
def _chat(args) -> tuple[dict, str]:
    from .model.bench_chat import bench_chat, format_chat

    report = bench_chat(workdir=args.workdir, progress=not args.json)
    return report, format_chat(report)


@BENCHMARKS.register("pack")
def _pack(args) -> tuple[dict, str]:
    from .train.bench import bench_pack, format_pack

    report = bench_pack(mixes=("short",) if args.quick else ("short", "long"), progress=not args.json,
                        random_llm=args.random_llm, lora=args.lora, row_lengths=(2048, 4096, 8192, 16384) if args.rows else ())
    return report, format_pack(report)


@BENCHMARKS.register("fsdp")
def _fsdp(args) -> tuple[dict, str]:
    from .train.bench_fsdp import bench_fsdp, format_fsdp

    report = bench_fsdp(quick=args.quick, progress=not args.json)
    return report, format_fsdp(report)


@BENCHMARKS.register("data")
def _data(args) -> tuple[dict, str]:
    from .train.bench_data import bench_data, format_data

    report = bench_data(workdir=args.workdir, cases=(1_000, 10_000) if args.quick else (10_000, 100_000, 1_000_000),
                        samples=100 if args.quick else 400, progress=not args.json)
    return report, format_data(report)


@BENCHMARKS.register("serve")
def _serve(args) -> tuple[dict, str]:
    if args.engine:  # engines side by side (serve/bench_engines.py)
        from .serve.bench_engines import EngineBenchConfig, bench_engines, format_engines

        levels = tuple(int(c) for c in args.levels.split(",")) if args.levels else ((1, 4) if args.quick else (1, 8, 32))
        cfg = EngineBenchConfig(engines=tuple(args.engine.replace("|", ",").split(",")), model=args.model or "kangaroo-smol", levels=levels,
                                frames=args.frames or 8, max_tokens=args.max_tokens or (8 if args.quick else 32),
                                min_requests=2 if args.quick else 4, vllm_python=args.vllm_python, workdir=args.workdir,
                                data=args.data, limit=args.limit or 40, min_tokens=args.min_tokens)
        report = bench_engines(cfg, progress=not args.json)
        return report, format_engines(report)
    from .serve.bench import bench_serve, format_serve

    report = bench_serve(model=args.model, workdir=args.workdir)
    return report, format_serve(report)


@BENCHMARKS.register("curate")
def _curate(args) -> tuple[dict, str]:
    from .data.bench import bench_curate, format_curate

    report = bench_curate(workdir=args.workdir, quick=args.quick, repeats=args.repeats, progress=not args.json)
    return report, format_curate(report)


@BENCHMARKS.register("score")
def _score(args) -> tuple[dict, str]:
    from .eval.bench import bench_score, format_score

    report = bench_score(model=args.model, workdir=args.workdir, frames=(8,) if args.quick else (16, 64),
                         num_questions=3 if args.quick else 8, progress=not args.json)
    return report, format_score(report)


@BENCHMARKS.register("watch")
def _watch(args) -> tuple[dict, str]:
    from .model.bench_watch import bench_watch, format_watch

    report = bench_watch(model=args.model, workdir=args.workdir, quick=args.quick, progress=not args.json)
    return report, format_watch(report)


@BENCHMARKS.register("convert")
def _convert(args) -> tuple[dict, str]:
    import os

    from .model.bench_convert import bench_convert, format_convert

    report = bench_convert(workdir=os.path.join(args.workdir, "convert"), quick=args.quick, keep=args.keep,
                           progress=not args.json)
    return report, format_convert(report)


@BENCHMARKS.register("serve_scale")
def _serve_scale(args) -> tuple[dict, str]:
    from .serve.bench_scale import bench_serve_scale, format_serve_scale

    report = bench_serve_scale(model=args.model, clients=args.clients or (4 if args.quick else 16),
                               max_tokens=4 if args.quick else 8, workdir=args.workdir, progress=not args.json)
    return report, format_serve_scale(report)


@BENCHMARKS.register("quant")
def _quant(args) -> tuple[dict, str]:
    from .model.bench_quant import bench_quant, format_quant

    report = bench_quant(model=args.model or "kangaroo-smol", data=args.data or "data/smol/heldout_short",
                         limit=args.limit or (8 if args.quick else 40), tokens=8 if args.quick else 16,
                         progress=not args.json)
    return report, format_quant(report)


def add_bench_args(p) -> None:
    p.add_argument("name", choices=BENCHMARKS.names())
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--quick", action="store_true", help="a smaller run (for smoke tests)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workdir", default=".bench", help="where generated inputs are cached")
    p.add_argument("--keep", action="store_true", help="convert: keep the generated 8B-shape inputs (~17 GB)")
    p.add_argument("--random-llm", action="store_true", help="pack: an LLM of SmolLM2's shape with random weights "
                   "(timings do not depend on weights)")
    p.add_argument("--lora", action="store_true", help="pack: LoRA adapters on the LLM train too (instruction stages)")
    p.add_argument("--rows", action="store_true", help="pack: also real tokens/s against packed row length (2k-16k)")
    p.add_argument("--model", default=None, help="serve: a model name or folder (default: kangaroo-smol's architecture); score, quant: (default: kangaroo-smol)")
    p.add_argument("--clients", type=int, default=None, help="serve_scale: concurrent clients (default 16; --quick 4)")
    p.add_argument("--data", default=None, help="quant: the held-out set (default data/smol/heldout_short); serve --engine: "
                   "also each engine's accuracy on it")
    p.add_argument("--limit", type=int, default=None, help="quant, serve --engine: held-out questions (default 40; quant --quick 8)")
    p.add_argument("--engine", default=None, help="serve: compare serving engines in one run, e.g. vllm,ours "
                   "(NAME[:VARIANT]: vllm, vllm:bf16, vllm:fp8_per_block, vllm:w8a8, vllm:w4a16, ours, ours:int8; "
                   "the first is the baseline)")
    p.add_argument("--levels", default=None, help="serve --engine: concurrent clients per level (default 1,8,32)")
    p.add_argument("--frames", type=int, default=None, help="serve --engine: frames per video (default 8)")
    p.add_argument("--max-tokens", type=int, default=None, help="serve --engine: new tokens per answer (default 32)")
    p.add_argument("--min-tokens", type=int, default=0,
                   help="serve --engine: no stop token before this many (= --max-tokens: every answer that long)")
    p.add_argument("--vllm-python", default=".vllmenv/bin/python",
                   help="serve --engine vllm: the Python of vLLM's environment (make vllm-env)")


def run_bench(args) -> int:
    report, table = BENCHMARKS.get(args.name)(args)
    print(json.dumps(report, indent=2) if args.json else table)
    return 0
