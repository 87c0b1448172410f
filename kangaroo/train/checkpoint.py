"""Sharded training checkpoints with ``torch.distributed.checkpoint`` (DCP).

Layout of ``OUT/checkpoints/step_N/`` (format 2)::

    dcp/               the trainable weights and the AdamW state, one ``__R_0.distcp`` file per
                       rank holding that rank's shards (no gather to rank 0), plus DCP's ``.metadata``
    rank_R.pt          rank R's CPU and CUDA RNG states
    data_rank_R.json   rank R's data position (whatever the trainer's ``data_state()`` returns)
    trainer.pt         the LR schedule (the same on every rank; rank 0 writes it)
    state.json         {"format": 2, "step", "world"}: written last

Atomic: every rank writes into ``step_N.part/``; after a barrier rank 0 writes ``state.json``,
renames the folder to ``step_N`` and only then points ``latest`` at it. A crash at any moment
leaves ``latest`` on the previous whole checkpoint (``.part`` folders are never read).

Resharding: DCP stores each tensor's global shape and every shard's offsets, so a checkpoint
written by N ranks loads on M ranks (each rank reads the pieces its own shards overlap), and in
one process without a process group (``kangaroo export``, which reads it tensor by tensor into
a plain model: the HF folder is written from that, never from a gathered rank-0 copy).

Format 1 (``trainable.safetensors`` + ``optim.pt``, from before this module) is still read on the
world size it was written with, and refused clearly on another.
"""

from __future__ import annotations

import json
import os
import shutil

import torch
import torch.distributed as dist

FORMAT = 2


def _dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def _barrier() -> None:
    if _dist():
        dist.barrier()


def _options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(ignore_frozen_params=True, **kw)


def rng_state() -> dict:
    out = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state()  # this rank's device
    return out


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if torch.cuda.is_available() and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"])


def save(ckdir: str, step: int, model, opt, sched, data_state: dict, rank: int, world: int) -> str:
    """Collective (every rank calls it): write ``ckdir/step_N`` atomically; returns its path."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    final = os.path.join(ckdir, f"step_{step:07d}")
    tmp = final + ".part"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
    _barrier()
    msd, osd = get_state_dict(model, opt, options=_options())  # DTensor shards under FSDP: no gather
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=os.path.join(tmp, "dcp"), no_dist=not _dist())
    torch.save(rng_state(), os.path.join(tmp, f"rank_{rank}.pt"))
    with open(os.path.join(tmp, f"data_rank_{rank}.json"), "w") as f:
        json.dump(data_state, f)
    _barrier()
    if rank == 0:
        torch.save({"scheduler": sched.state_dict()}, os.path.join(tmp, "trainer.pt"))
        with open(os.path.join(tmp, "state.json"), "w") as f:
            json.dump({"format": FORMAT, "step": step, "world": world}, f)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        _atomic_write(os.path.join(ckdir, "latest"), os.path.basename(final))
    _barrier()
    return final


def read_meta(ck: str) -> dict:
    with open(os.path.join(ck, "state.json")) as f:
        meta = json.load(f)
    meta.setdefault("format", 1)
    return meta


def load(ck: str, model, opt, sched, rank: int, world: int) -> tuple[dict, list[dict]]:
    """Load a format-2 checkpoint into ``model``/``opt``/``sched`` on any world size; set this
    rank's RNG (rank R of M reads rank R % N's). Returns (state.json, every saved rank's data state)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    meta = read_meta(ck)
    msd, osd = get_state_dict(model, opt, options=_options())
    state = {"model": msd, "optim": osd}
    check_keys(ck, msd)
    dcp.load(state, checkpoint_id=os.path.join(ck, "dcp"), no_dist=not _dist())  # in place, resharded to this world
    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"],
                   options=_options(strict=False))  # the frozen parameters are not in it: DCP checked the rest
    sched.load_state_dict(torch.load(os.path.join(ck, "trainer.pt"), weights_only=True)["scheduler"])
    set_rng_state(torch.load(os.path.join(ck, f"rank_{rank % meta['world']}.pt"), weights_only=True))
    data = []
    for r in range(meta["world"]):
        with open(os.path.join(ck, f"data_rank_{r}.json")) as f:
            data.append(json.load(f))
    return meta, data


def load_model_only(ck: str, model) -> dict:
    """The trainable weights of a format-2 checkpoint into a plain (unsharded) model, in one
    process: DCP reads every rank's file, copying each shard into its slice of the full tensor."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

    meta = read_meta(ck)
    msd = get_model_state_dict(model, options=_options())
    state = {"model": msd}
    check_keys(ck, msd)
    dcp.load(state, checkpoint_id=os.path.join(ck, "dcp"), no_dist=True)
    set_model_state_dict(model, state["model"], options=_options(strict=False))
    return meta


def check_keys(ck: str, model_state: dict) -> None:
    """The checkpoint holds exactly the trainable parameters of ``model_state``, or a clear error
    (DCP would name one missing key deep in a traceback)."""
    from torch.distributed.checkpoint import FileSystemReader

    saved = {k[len("model."):] for k in FileSystemReader(os.path.join(ck, "dcp")).read_metadata().state_dict_metadata
             if k.startswith("model.")}
    missing, unexpected = sorted(set(model_state) - saved), sorted(saved - set(model_state))
    if missing or unexpected:
        raise ValueError(f"the checkpoint does not match the recipe's trainable parameters (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}): another recipe, or another init model?")


def _atomic_write(path: str, text: str) -> None:
    tmp = path + ".part"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
