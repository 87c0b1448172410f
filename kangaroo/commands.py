"""The ``kangaroo`` command's handlers (``cmd_*``): each reads its parsed arguments and calls the
library; the parser is ``kangaroo/cli.py``."""

from __future__ import annotations

import argparse  # noqa: F401
import json
import os
import sys


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False))


def _emit(args, rep: dict, fmt) -> int:
    """Print a report as JSON (--json) or in its human format."""
    if args.json:
        _print_json(rep)
    else:
        print(fmt(rep))
    return 0


def cmd_probe(args) -> int:
    from .video import probe

    info = probe(args.video).to_dict()
    if args.json:
        _print_json(info)
    else:
        width = max(len(k) for k in info)
        for k, v in info.items():
            print(f"{k:<{width}}  {v}")
    return 0


def sampling_from_args(args):
    from .video import SamplingConfig

    return SamplingConfig(
        sampler=args.sampler,
        num_frames=args.num,
        fps=args.fps,
        min_frames=args.min_frames,
        max_frames=args.max_frames,
        start=args.start,
        end=args.end,
        max_visual_tokens=args.max_visual_tokens,
        tokens_per_frame=args.tokens_per_frame,
    )


def cmd_frames(args) -> int:
    from PIL import Image

    from .video import DecodeOptions, load_video

    frames = load_video(args.video, sampling_from_args(args), DecodeOptions(max_side=args.max_side))
    os.makedirs(args.out, exist_ok=True)
    files = []
    for img, t in zip(frames.frames, frames.timestamps):
        name = f"frame_{t:010.3f}s.png"
        Image.fromarray(img).save(os.path.join(args.out, name))
        files.append(name)
    summary = frames.summary()
    summary["out"] = os.path.abspath(args.out)
    summary["files"] = files
    _print_json(summary)
    return 0


def cmd_synth(args) -> int:
    from .synth import SynthConfig, generate_dataset

    base = SynthConfig(fps=args.fps, width=args.width, height=args.height, num_objects=args.objects,
                       scene_cuts=args.cuts, text=args.text, static=args.static, needle=args.needle,
                       uneven=args.uneven)
    if args.layout == "kangaroo-8b":
        from .synth.layout import write_8b_layout

        _print_json(write_8b_layout(args.out, args.num_videos, args.long_videos, seed=args.seed,
                                    progress=not args.quiet, base=base))
        return 0
    manifest = generate_dataset(args.out, args.num_videos, args.min_seconds, args.max_seconds, seed=args.seed,
                                base=base, vary=not args.no_vary, progress=not args.quiet,
                                images_per_video=args.images_per_video, needle_image_share=args.needle_images)
    _print_json(manifest)
    return 0


def _gen_from_args(args):
    from .model.chat import GenerationConfig

    if args.greedy:
        return GenerationConfig(max_new_tokens=args.max_new_tokens, do_sample=False)
    return GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                            seed=args.seed)


def frame_cap() -> int:
    """The most frames one question may use: the server's cap (``ServeConfig.max_frames``), the one place it is set."""
    from .serve.engine import ServeConfig

    return ServeConfig.max_frames


def _chat_sampling(args):
    from .video import SamplingConfig

    cap = frame_cap()
    for flag, value in (("--frames", args.frames), ("--max-frames", args.max_frames)):
        if value is not None and not 1 <= value <= cap:
            raise ValueError(f"{flag} must be between 1 and {cap} (the frame cap, as in kangaroo serve), got {value}")
    if args.fps is not None:
        return SamplingConfig(sampler="fps", fps=args.fps, min_frames=2, max_frames=args.max_frames or cap,
                              start=args.start, end=args.end)
    return SamplingConfig(sampler=args.sampler, num_frames=args.frames, start=args.start, end=args.end)


def cmd_ask(args) -> int:
    from .model.chat import KangarooChat

    kc = KangarooChat.load(args.model, device=args.device, sampling=_chat_sampling(args), system_prompt=args.system,
                           quantize=args.quantize)
    conv = kc.start(args.video)
    gen = _gen_from_args(args)
    if args.json:
        answer = kc.ask(conv, args.question, gen)
        _print_json({"video": args.video, "question": args.question, "answer": answer, "frames": conv.frames,
                     "model": args.model, "generation": gen.__dict__, "quantize": args.quantize})
    else:
        for delta in kc.ask_stream(conv, args.question, gen):
            print(delta, end="", flush=True)
        print()
    return 0


def cmd_chat(args) -> int:
    from .model.chat import KangarooChat

    kc = KangarooChat.load(args.model, device=args.device, sampling=_chat_sampling(args), system_prompt=args.system,
                           quantize=args.quantize)
    conv = kc.start(args.video)
    gen = _gen_from_args(args)
    print(f"[{conv.frames['num_frames']} frames, {conv.frames['visual_tokens']} visual tokens; "
          "empty line or Ctrl-D to quit]", file=sys.stderr)
    while True:
        try:
            q = input("you> ").strip()
        except EOFError:
            break
        if not q:
            break
        print("kangaroo> ", end="", flush=True)
        for delta in kc.ask_stream(conv, q, gen):
            print(delta, end="", flush=True)
        print()
    return 0


def cmd_watch(args) -> int:
    from .model.chat import KangarooChat
    from .model.session import WatchConfig, watch_lines

    cfg = WatchConfig(fps=args.fps, max_frames=args.max_frames, policy=args.policy, conversation=args.conversation,
                      idle_timeout_s=args.idle_timeout)
    kc = KangarooChat.load(args.model, device=args.device, system_prompt=args.system)
    watch_lines(kc, cfg, args.source, sys.stdin, _gen_from_args(args), lambda line: print(line, flush=True))
    return 0


def cmd_convert(args) -> int:
    import torch

    from .model.convert import convert_official

    report = convert_official(args.official, args.out, dtype=getattr(torch, args.dtype), key_map=args.map,
                              allow_partial=args.allow_partial, max_shard_size=args.max_shard_size)
    _print_json({k: (v if not isinstance(v, list) else {"count": len(v), "keys": v}) for k, v in report.items()})
    return 0


def cmd_assemble(args) -> int:
    from .model.assemble import assemble

    rep = assemble(args.vision, args.llm, args.out, image_size=args.image_size, dtype=args.dtype, heads=args.heads,
                   seed=args.seed, max_shard_size=args.max_shard_size)
    _print_json({"out": os.path.abspath(args.out), "dtype": rep["dtype"], "image_size": rep["image_size"],
                 "vision_layout": rep["vision"]["layout"], "vision_ignored": len(rep["vision"]["ignored"]),
                 "llm_tensors": rep["llm"]["tensors"], "media_tokens": rep["media_tokens"], "files": rep["files"]})
    return 0


def cmd_train(args) -> int:
    from .train import Recipe, distributed_session, make_trainer

    recipe = Recipe.load(args.recipe, overrides=args.set)
    out = args.out or os.path.join("runs", recipe.name)
    with distributed_session():
        trainer = make_trainer(recipe, out, previous=args.init_from, progress=not args.quiet)
        last = trainer.train(resume=args.resume, stop_at=args.stop_after)
    if int(os.environ.get("RANK", "0")) == 0:
        _print_json({"out": out, **last})
    return 0


def cmd_plan(args) -> int:
    from .train.plan import format_plan, plan

    rep = plan(args.model, args.frames, args.gpus, args.gpu_memory_gib, stage=args.stage, lora=args.lora,
               text_tokens=args.text_tokens, reserve_gib=args.reserve_gib, shard_vision=args.shard_vision)
    if args.json:
        _print_json(rep)
    else:
        print(format_plan(rep))
    return 0


def cmd_export(args) -> int:
    from .train import export_checkpoint

    _print_json(export_checkpoint(args.run, args.out, step=args.step, previous=args.init_from))
    return 0


def cmd_export_vllm(args) -> int:
    from .vllm_plugin.export import export_quantized

    print(export_quantized(args.model, args.out, args.scheme))
    return 0


def cmd_curriculum(args) -> int:
    from .train import Recipe, distributed_session, run_curriculum
    from .train.curriculum import expand_stages
    from .train.recipe import check_curriculum

    paths = expand_stages(args.recipes)  # a curriculum file lists its stages
    recipes = [Recipe.load(p, overrides=args.set) for p in paths]  # every stage checked before the first trains
    check_curriculum(recipes, paths)
    with distributed_session():
        results = run_curriculum(recipes, args.out, resume=args.resume, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        _print_json(results)
    return 0


def cmd_ablate(args) -> int:
    from .train import Recipe
    from .train.ablate import format_ablation, run_ablation

    recipes = [Recipe.load(p) for p in args.recipes]
    rep = run_ablation(args.name, recipes, args.out, args.data, frames=args.frames, limit=args.limit,
                       tasks=args.tasks.split(",") if args.tasks else None, resume=args.resume,
                       progress=not args.json, mc_scoring=args.mc_scoring, steps_scale=args.steps_scale)
    return _emit(args, rep, format_ablation)


def cmd_serve(args) -> int:
    from .serve import ServeConfig, serve

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: binding to {args.host} exposes the server beyond this machine", file=sys.stderr)
    sessions = {"max_sessions": args.max_sessions, "session_idle_s": args.session_idle_s}  # None: the config's
    serve(ServeConfig(model=args.model, host=args.host, port=args.port, store=args.store,
                      allowed_roots=[os.path.abspath(r) for r in args.allow_root], allow_remote=bool(args.allow_host),
                      remote_hosts=args.allow_host, max_frames=args.max_frames or ServeConfig.max_frames,
                      max_queue=args.max_queue, store_max_mb=args.store_max_mb or None,
                      decode_workers=args.decode_workers, max_batch=args.max_batch, quantize=args.quantize,
                      **{k: v for k, v in sessions.items() if v is not None}))
    return 0


def cmd_eval(args) -> int:
    from .eval.harness import EvalConfig, rank_device, run_eval, shard_from_env
    from .model.chat import KangarooChat

    if args.benchmark != "niah":  # a malformed annotation file is refused before a model is loaded
        from .eval.benchmarks import BENCHMARKS as EVAL_BENCHMARKS

        if not args.data:
            raise ValueError(f"--data is required for {args.benchmark}")
        if not os.path.isdir(args.data):
            raise FileNotFoundError(f"--data {args.data}: no such folder")
        EVAL_BENCHMARKS.get(args.benchmark)(args.data)
    kc = KangarooChat.load(args.model, device=rank_device(args.device))
    if args.frames_per_slot is not None:
        kc.model.set_frames_per_slot(args.frames_per_slot)
    name = args.model.rstrip("/").split("/")[-1]
    if args.benchmark == "niah":
        from .eval.niah import needle_suite

        res = needle_suite(kc, args.out, per_cell=args.per_cell, progress=not args.json, mc_scoring=args.mc_scoring,
                           sampler=args.sampler)
        summary = {k: v for k, v in res.items()}
    else:
        rank, world = (int(x) for x in args.shard.split("/")) if args.shard else (0, 1)
        cfg = shard_from_env(EvalConfig(args.benchmark, args.data, args.out, frames=args.frames, limit=args.limit,
                                        rank=rank, world=world, judge_url=args.judge_url, mc_scoring=args.mc_scoring,
                                        sampler=args.sampler, tasks=args.tasks.split(",") if args.tasks else None,
                                        window=args.window))
        summary = run_eval(kc, cfg, name, progress=not args.json)
        if summary.get("unreadable"):
            from .eval.harness import unreadable_line

            print(f"warning: {unreadable_line(summary).replace('**', '')}", file=sys.stderr)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under torchrun rank 0 reports, once
    if args.json:
        _print_json(summary)
    else:
        from .eval.harness import markdown

        print(markdown(summary) if "settings" in summary else json.dumps(summary, indent=1))
    return 0


def cmd_compare(args) -> int:
    from .eval.compare import compare_runs, format_compare

    rep = compare_runs(args.a, args.b)
    return _emit(args, rep, format_compare)


def cmd_curate(args) -> int:
    from .data import CurateConfig, curate

    cfg = CurateConfig.load(args.config) if args.config else CurateConfig()
    if args.no_captions:
        cfg.captioners = []
    if args.print_config:
        import yaml

        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True), end="")
        return 0
    if not args.input or not args.out:
        raise ValueError("curate needs INPUT and --out DIR")
    report = curate(args.input, args.out, cfg, executor=args.executor, workers=args.workers, threads=args.threads,
                    progress=not args.json, restart=args.restart)
    if args.json:
        _print_json(report)
    else:
        from .data.report import format_report

        print(format_report(report))
        print(f"manifest: {os.path.join(args.out, 'manifest.jsonl')}  rejects: {os.path.join(args.out, 'rejects.jsonl')}")
    return 0


def cmd_bench(args) -> int:
    from .bench import run_bench

    return run_bench(args)
