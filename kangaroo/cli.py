"""The ``kangaroo`` command: a thin layer over the library.

Every handled failure (bad video, bad option) prints one ``error: ...`` line to
stderr and exits with status 2; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .commands import (cmd_ablate, cmd_ask, cmd_assemble, cmd_bench, cmd_chat, cmd_compare,
                       cmd_convert, cmd_curate, cmd_curriculum, cmd_eval, cmd_export, cmd_export_vllm, cmd_frames,
                       cmd_plan, cmd_probe, cmd_serve, cmd_synth, cmd_train, cmd_watch)  # noqa: F401


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    from .video import SAMPLERS

    p.add_argument("--sampler", default="uniform", choices=SAMPLERS.names())
    p.add_argument("--num", type=int, default=16, help="frames for the uniform sampler")
    p.add_argument("--fps", type=float, default=1.0, help="rate for the fps sampler")
    p.add_argument("--min-frames", type=int, default=1)
    p.add_argument("--max-frames", type=int, default=160)
    p.add_argument("--start", type=float, default=None, help="seconds")
    p.add_argument("--end", type=float, default=None, help="seconds")
    p.add_argument("--max-visual-tokens", type=int, default=None, help="cap frames by a token budget")
    p.add_argument("--tokens-per-frame", type=int, default=None)


def add_generation_args(p: argparse.ArgumentParser, max_new_tokens: int, quantize: bool = True) -> None:
    """The model and answer options of ask, chat and watch."""
    p.add_argument("--model", default="kangaroo-smol", help="built-in name or model folder")
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    p.add_argument("--temperature", type=float, default=0.6)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--greedy", action="store_true")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default="cpu")
    if quantize:
        p.add_argument("--quantize", default=None, choices=["int8", "int4"],
                       help="torchao weight-only quantisation of the LLM (the vision tower is not quantised)")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .video import COUNT_SAMPLERS

    ap = argparse.ArgumentParser(prog="kangaroo", description="Kangaroo long-context video-language toolkit")
    ap.add_argument("--version", action="version", version=f"kangaroo {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("probe", help="describe a video file")
    p.add_argument("video")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("frames", help="sample frames and write them as PNG named by timestamp")
    p.add_argument("video")
    p.add_argument("--out", required=True)
    p.add_argument("--max-side", type=int, default=None, help="downscale so the longer side is at most this")
    add_sampling_args(p)
    p.set_defaults(func=cmd_frames)

    p = sub.add_parser("synth", help="generate synthetic videos with ground-truth QA")
    p.add_argument("--out", required=True)
    p.add_argument("--num-videos", type=int, default=4)
    p.add_argument("--min-seconds", type=float, default=10.0)
    p.add_argument("--max-seconds", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fps", type=float, default=8.0)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--objects", type=int, default=4)
    p.add_argument("--cuts", type=int, default=0, help="scene cuts per video (0: vary 0-2)")
    p.add_argument("--text", default=None, help="burn this text into every frame")
    p.add_argument("--static", action="store_true", help="motionless videos")
    p.add_argument("--needle", action="store_true", help="a brief needle event in every video")
    p.add_argument("--uneven", action="store_true",
                   help="appearances of random length, so on-screen time does not give away the count")
    p.add_argument("--no-vary", action="store_true", help="same settings for every video but the duration")
    p.add_argument("--images-per-video", type=int, default=0, help="also write still frames as image-text pairs")
    p.add_argument("--needle-images", type=float, default=0.0, metavar="SHARE",
                   help="the fraction of those stills taken while the needle is on screen (default 0)")
    p.add_argument("--layout", default="synth", choices=["synth", "kangaroo-8b"],
                   help="kangaroo-8b: the files and formats recipes/kangaroo-8b read (KANGAROO_DATA=OUT)")
    p.add_argument("--long-videos", type=int, default=2, help="kangaroo-8b layout: videos longer than 64 s")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_synth)

    for name, helptext in (("ask", "ask one question about a video"), ("chat", "interactive chat about a video")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("video")
        if name == "ask":
            p.add_argument("question")
            p.add_argument("--json", action="store_true")
        p.add_argument("--frames", type=int, default=16, help="frame count")
        p.add_argument("--sampler", default="uniform", choices=COUNT_SAMPLERS,
                       help="how --frames are placed (events, ours: half on brief events)")
        p.add_argument("--fps", type=float, default=None, help="sample at this rate instead of --frames")
        p.add_argument("--max-frames", type=int, default=None, help="with --fps (default and limit: the frame cap, 160)")
        p.add_argument("--start", type=float, default=None)
        p.add_argument("--end", type=float, default=None)
        add_generation_args(p, 512)
        p.set_defaults(func=cmd_ask if name == "ask" else cmd_chat)

    p = sub.add_parser("watch", help="follow a growing video or live stream; questions on stdin, JSON answers")
    p.add_argument("source", help="a file being written (MPEG-TS, Matroska) or a stream PyAV opens")
    p.add_argument("--fps", type=float, default=1.0, help="frames sampled per second of video")
    p.add_argument("--max-frames", type=int, default=None,
                   help="frame budget (default: as many as fit the context); older frames are thinned past it")
    p.add_argument("--policy", default="every_other", help="thinning policy: every_other or events")
    p.add_argument("--conversation", action="store_true", help="keep earlier questions and answers")
    p.add_argument("--idle-timeout", type=float, default=10.0, help="seconds without new data that end the stream")
    add_generation_args(p, 128, quantize=False)
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("convert", help="convert the official Kangaroo release to our layout")
    p.add_argument("--official", required=True, help="folder with config.json and pytorch_model.bin")
    p.add_argument("--out", required=True)
    p.add_argument("--map", default=None, metavar="FILE", help="JSON {official_key: our_key} for names no rule knows")
    p.add_argument("--allow-partial", action="store_true",
                   help="convert even if a part would stay at fresh init (the folder's report marks it untrained)")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--max-shard-size", default="5GB")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("assemble", help="build a Kangaroo model folder from an EVA02 vision checkpoint + an HF Llama")
    p.add_argument("--vision", required=True, help="EVA-CLIP .pt, open_clip or timm EVA02 checkpoint (.pt/.bin/.safetensors)")
    p.add_argument("--llm", required=True, help="an HF Llama folder (sharded or not), with tokenizer + chat template")
    p.add_argument("--out", required=True, help="the model folder to write (must not exist)")
    p.add_argument("--image-size", type=int, default=448, help="pos_embed resized to this (default 448)")
    p.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"],
                   help="auto: the LLM folder's own dtype (LLM tensors bit for bit)")
    p.add_argument("--heads", type=int, default=None, help="vision heads (default width / 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the new parts' init")
    p.add_argument("--max-shard-size", default="5GB")
    p.set_defaults(func=cmd_assemble)

    p = sub.add_parser("train", help="train one curriculum stage from a YAML recipe (torchrun for several GPUs)")
    p.add_argument("--recipe", required=True)
    p.add_argument("--out", default=None, help="run folder (default runs/NAME)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    p.add_argument("--init-from", default=None, help="model folder for a recipe whose init is 'previous'")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value (YAML-typed, dotted keys like lora.r; repeatable)")
    p.add_argument("--stop-after", type=int, default=None, metavar="STEP",
                   help="stop after this step, as an interruption would (no export; the schedule stays max_steps')")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("plan", help="predict per-GPU peak memory of inference and of each 8B training stage")
    p.add_argument("--model", default="8b", help="'8b' (the paper's shape) or a model folder")
    p.add_argument("--frames", type=int, required=True, help="frames in the row's video")
    p.add_argument("--gpus", type=int, default=1, help="GPUs the model is sharded over (FSDP2)")
    p.add_argument("--gpu-memory-gib", type=float, required=True, help="memory of one GPU, GiB")
    p.add_argument("--stage", type=int, default=None, help="only this stage (recipes/kangaroo-8b/stageK_*.yaml)")
    p.add_argument("--lora", action="store_true", help="train the LLM with LoRA adapters instead of in full")
    p.add_argument("--text-tokens", type=int, default=256, help="text tokens in the row besides the video")
    p.add_argument("--reserve-gib", type=float, default=2.0, help="kept free per GPU (CUDA context, allocator slack)")
    p.add_argument("--shard-vision", choices=["root", "blocks"], default=None,
                   help="with --gpus > 1: the vision tower in FSDP's root unit or a unit per block (default: the recipe's)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("export", help="export a training run's checkpoint as a model folder (evaluate a run mid-way)")
    p.add_argument("run", help="a kangaroo train --out folder")
    p.add_argument("--out", required=True, help="the model folder to write")
    p.add_argument("--step", type=int, default=None, help="the checkpoint's step (default: the latest)")
    p.add_argument("--init-from", default=None, help="what the run's --init-from was (recipes whose init is 'previous')")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("export-vllm", help="a pre-quantised copy of a full model folder for vLLM (int8 W8A8 / int4 W4A16)")
    p.add_argument("model", help="a full Kangaroo folder (config.json + weights)")
    p.add_argument("out", help="the folder to write (vllm serve OUT)")
    p.add_argument("--scheme", default="w8a8", choices=["w8a8", "w4a16"],
                   help="w8a8: int8 channel-wise LLM weights, int8 per-token activations; w4a16: int4 weights in "
                        "groups, activations unquantised (compressed-tensors)")
    p.set_defaults(func=cmd_export_vllm)

    p = sub.add_parser("curriculum", help="run several stages in order, each from the previous stage's model")
    p.add_argument("recipes", nargs="+", help="stage recipes in order, or a curriculum file listing them "
                                              "(recipes/smol/curriculum.yaml)")
    p.add_argument("--out", required=True)
    p.add_argument("--resume", action="store_true", help="skip finished stages, resume the current one")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value in every stage (YAML-typed, dotted keys like lora.r; repeatable)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_curriculum)

    p = sub.add_parser("ablate", help="train the variants of an ablation at equal compute, evaluate and plot them")
    p.add_argument("name", choices=["curriculum", "tpe", "time_labels"])
    p.add_argument("recipes", nargs="+", help="the curriculum's stage recipes, in order")
    p.add_argument("--out", required=True)
    p.add_argument("--data", required=True, help="a held-out synthetic set (kangaroo synth output)")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--tasks", default=None, help="question families, comma-separated (tpe: appear_at,when)")
    p.add_argument("--mc-scoring", choices=["generate", "likelihood"], default="generate",
                   help="multiple choice: the model names a letter, or the likeliest option text")
    p.add_argument("--steps-scale", type=float, default=1.0,
                   help="scale every language-model stage's steps (a cheaper ablation; variants stay at equal compute)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ablate)

    p = sub.add_parser("serve", help="OpenAI-compatible server + web chat page")
    p.add_argument("--model", default="kangaroo-smol")
    p.add_argument("--host", default="127.0.0.1", help="default: localhost only")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--store", default=".kangaroo_serve", help="folder for uploaded videos")
    p.add_argument("--allow-root", action="append", default=[], help="allow file:// videos under this folder")
    p.add_argument("--allow-host", action="append", default=[], help="allow fetching https videos from this host")
    p.add_argument("--max-frames", type=int, default=None, help="frames per request at most (default 160)")
    p.add_argument("--max-queue", type=int, default=64)
    p.add_argument("--store-max-mb", type=float, default=4096,
                   help="bound on the store of uploads and data: URL videos, least recently used deleted first "
                        "(0: unbounded)")
    p.add_argument("--decode-workers", type=int, default=4, help="video decodes at once, outside the model")
    p.add_argument("--max-batch", type=int, default=32, help="sequences decoded together (continuous batching)")
    p.add_argument("--max-sessions", type=int, default=None,
                   help="streaming sessions (/v1/sessions) open at once, 429 beyond (default 4)")
    p.add_argument("--session-idle-s", type=float, default=None,
                   help="a streaming session unused this long is closed and its KV cache freed (default 600)")
    p.add_argument("--quantize", default=None, choices=["int8", "int4"],
                   help="torchao weight-only quantisation of the LLM (the vision tower is not quantised)")
    p.set_defaults(func=cmd_serve)

    from .eval.benchmarks import BENCHMARKS as EVAL_BENCHMARKS

    p = sub.add_parser("eval", help="evaluate a model on a benchmark (local annotation files)")
    p.add_argument("--model", default="kangaroo-smol")
    p.add_argument("--benchmark", required=True, choices=EVAL_BENCHMARKS.names() + ["niah"])
    p.add_argument("--data", default=None, help="the benchmark's folder (not needed for niah)")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--tasks", default=None, help="comma-separated tasks / families to keep")
    p.add_argument("--out", required=True)
    p.add_argument("--shard", default=None, help="i/n: this process takes every n-th item (torchrun sets it)")
    p.add_argument("--judge-url", default=None, help="OpenAI-compatible endpoint for open-ended scoring")
    p.add_argument("--mc-scoring", default="generate", choices=["generate", "likelihood"],
                   help="multiple choice: the model names a letter (default), or the likeliest option text wins "
                        "(lmms-eval's multiple_choice output type)")
    p.add_argument("--sampler", default="uniform", choices=COUNT_SAMPLERS,
                   help="events (ours): half of the frames on brief events found in a thumbnail scan")
    p.add_argument("--frames-per-slot", type=int, default=None, choices=[1, 2],
                   help="override the model's distinct frames per temporal slot (1: a slot per frame)")
    p.add_argument("--window", default="video", choices=["video", "evidence"],
                   help="evidence (ours, a diagnostic): frames only from each question's ground-truth interval "
                        "(synthetic set), which separates seeing from finding")
    p.add_argument("--per-cell", type=int, default=2, help="niah: videos per (frames, depth) cell")
    p.add_argument("--device", default="cpu", help="cpu, cuda (under torchrun: each rank's cuda:LOCAL_RANK), cuda:N")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("compare", help="paired comparison of two eval runs on the same questions (exact sign test)")
    p.add_argument("a", help="an eval --out folder (the baseline)")
    p.add_argument("b", help="an eval --out folder (the candidate)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("curate", help="curate videos/images into a training manifest (resumable; local or Ray)")
    p.add_argument("input", nargs="?", help="a folder, a glob, a list file (.txt) or a JSON/JSONL of records")
    p.add_argument("--out", help="output folder (rerun the same command to resume)")
    p.add_argument("--config", help="a YAML curate config (see --print-config for every key and default)")
    p.add_argument("--executor", default="local", choices=["local", "ray"])
    p.add_argument("--workers", type=int, default=1, help="worker processes / Ray actors (0: inline, no isolation)")
    p.add_argument("--threads", type=int, default=1, help="threads per worker (decode, OCR, torch)")
    p.add_argument("--no-captions", action="store_true", help="filters only: skip captioning")
    p.add_argument("--restart", action="store_true", help="discard a previous run in --out")
    p.add_argument("--print-config", action="store_true", help="print the effective config as YAML and exit")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_curate)

    p = sub.add_parser("bench", help="benchmarks that measure a ratio against a baseline")
    from .bench import add_bench_args

    add_bench_args(p)
    p.set_defaults(func=cmd_bench)
    return ap


def _stdout_closed() -> bool:
    """True when nobody reads our stdout any more (the reader of a pipe went away)."""
    import select

    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))


def main(argv: list[str] | None = None) -> int:
    """Run one command. When stdout is closed early (``kangaroo probe X | head -1``) it stops
    quietly with status 1, Python's recipe: stdout goes to /dev/null so that the interpreter's
    final flush cannot fail again."""
    try:
        code = _main(argv)
        sys.stdout.flush()  # fail here, where it is caught, not in the interpreter's shutdown
        return code
    except BrokenPipeError:
        if not _stdout_closed():
            raise  # a pipe other than stdout broke: a real failure
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _main(argv: list[str] | None) -> int:
    from .video import VideoError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except VideoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (ValueError, KeyError, FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
