"""`reparam-zoo compare`: the same net with each block, trained, folded, verified and measured.

Seeds run in rounds (every block with seed 0, then every block with seed 1, ...) against a control
block; each training is :func:`~reparam_zoo.bench.trainer.train_and_measure` (single process, or
one process per GPU/CPU slot under ``torchrun``). Only rank 0 measures and writes: one latency per
distinct deployed network, the summaries with paired statistics, the result files put in place
together.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from reparam_zoo.bench import report
from reparam_zoo.bench.measure import latency_ms
from reparam_zoo.bench.trainer import (
    RepOpt,
    TrainConfig,
    build_subject,
    dist_env,
    init_distributed,
    run_device,
    train_and_measure,
)
from reparam_zoo.engine.cost import count_params
from reparam_zoo.engine.fold import fold_model
from reparam_zoo.engine.nets import NetSpec, block_fits
from reparam_zoo.engine.repopt import repopt
from reparam_zoo.errors import SpecError
from reparam_zoo.outputs import RunLock, publish, write_json
from reparam_zoo.spec.lookup import get_spec, list_specs
from reparam_zoo.spec.schema import BlockSpec
from reparam_zoo.stats import spread

#: the block name of the plain conv+BN control
CONTROL = "plain"


@dataclass(kw_only=True)
class CompareConfig(TrainConfig):
    """A comparison: how each network trains (:class:`~reparam_zoo.bench.trainer.TrainConfig`), the
    blocks, the seeds, the control and where the results go."""

    blocks: list[str | BlockSpec | RepOpt]  # block spec names, YAML paths or specs; RepOpt: trained as a RepOptimizer
    seeds: int = 1
    out: Path = Path("runs/compare")
    extra: dict = field(default_factory=dict)
    control: str | None = None  # the block every other is compared with (paired over seeds), e.g. "plain"
    time_budget: float | None = None  # seconds: no new round of seeds starts that would not fit


def measure_deploy_groups(cfg: CompareConfig, runs: list[dict], repeats: int = 5) -> dict[str, dict]:
    """One latency measurement per distinct deployed network: blocks that fold to the same convs
    (the same ``deploy_signature``) share it, so timing noise cannot rank identical nets. Each
    latency is measured ``repeats`` times (each a median of ``latency_runs`` forwards), reported as
    median and interquartile range."""
    device = run_device(cfg.device)
    groups: dict[str, list[str]] = {}
    for r in runs:
        members = groups.setdefault(r["deploy_signature"], [])
        if r["block"] not in members:
            members.append(r["block"])
    out = {}
    for i, (sig, blocks) in enumerate(groups.items()):
        torch.manual_seed(0)
        deployed = fold_model(build_subject(cfg, _block_of(cfg, blocks[0])).eval()).to(device)
        shape1 = (1, cfg.data.in_channels, cfg.net.input_size, cfg.net.input_size)
        g = {"group": chr(ord("A") + i) if i < 26 else f"G{i}", "blocks": blocks, "deploy_params": count_params(deployed)}
        for b in (1, cfg.latency_batch):
            shape = (b, *shape1[1:])
            s = spread([latency_ms(deployed, shape, device, cfg.latency_runs) for _ in range(repeats)])
            g[f"deploy_ms_b{b}"], g[f"deploy_ms_b{b}_q1"], g[f"deploy_ms_b{b}_q3"] = s["median"], s["q1"], s["q3"]
        out[sig] = g
    return out


def _block_of(cfg: CompareConfig, label: str):
    """The block a run's label names (labels are block names, or the spec for a BlockSpec)."""
    for b in cfg.blocks:
        if (b if isinstance(b, str) else b.name) == label:
            return b
    return label


# ----------------------------------------------------------------------------- reporting


def _no_nan(obj):
    """NaN (e.g. CUDA memory on a CPU run) as JSON null."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_no_nan(v) for v in obj]
    return obj


PARTIAL = "results.partial.json"
RESULT_FILES = ("results.json", "results.csv", "results.md", "plot.png")


def _config(cfg: CompareConfig, seconds: float) -> dict:
    return {"net": cfg.net.name, "data": cfg.data.name, "train_images": len(cfg.data.train_x),
            "val_images": len(cfg.data.val_x), "epochs": cfg.epochs, "seeds": cfg.seeds, "device": cfg.device,
            "batch_size": cfg.batch_size, "lr": cfg.lr, "mode": cfg.mode, "world_size": dist_env()[1],
            "torch": torch.__version__, "threads": torch.get_num_threads(), "seconds": round(seconds, 1),
            "finished": datetime.datetime.now().isoformat(timespec="seconds"), "control": cfg.control,
            "time_budget": cfg.time_budget, **({"int8_calibration": cfg.int8_calibration} if cfg.int8 else {}),
            **cfg.extra}


def write_partial(cfg: CompareConfig, runs: list[dict], seconds: float) -> None:
    """``results.partial.json``: the trainings finished so far (written atomically after each), so an
    interrupted run keeps them under a name that says what they are; the complete result files beside it,
    if any, are the previous complete run's, untouched."""
    total = len(cfg.blocks) * cfg.seeds
    note = (f"PARTIAL: an unfinished run ({len(runs)} of {total} trainings done). Any results.* files in this "
            "folder are from the previous complete run, not from this one.")
    write_json(cfg.out / PARTIAL, _no_nan({"partial": True, "note": note, "config": _config(cfg, seconds),
                                           "runs": runs}), indent=2)


def write_outputs(cfg: CompareConfig, runs: list[dict], seconds: float, groups: dict | None = None,
                  stopped_early: bool = False) -> list[dict]:
    """results.json/.csv/.md and plot.png, put in place together (see :func:`outputs.publish`); the
    partial file is removed in the same step."""
    rows = report.summarize(runs, cfg.control, groups, cfg.latency_batch)
    config = _config(cfg, seconds)
    config.update(seeds_done=min(r["seeds"] for r in rows), stopped_early=stopped_early)
    words = report.conclusion(rows, cfg.control, config)
    csv_text = io.StringIO()
    # per-layer lists (kernel_layers) stay in results.json: one CSV row per run keeps scalars only
    scalar = [{k: v for k, v in r.items() if not isinstance(v, (list, dict))} for r in runs]
    w = csv.DictWriter(csv_text, fieldnames=list(dict.fromkeys(k for r in scalar for k in r)))
    w.writeheader()
    w.writerows(scalar)
    table = report.markdown(rows, groups or {}, cfg.control, cfg.latency_batch)
    if cfg.int8:
        table += "\n\n" + report.int8_markdown(rows, cfg.control, cfg.int8_calibration)
    md = (f"# reparam-zoo compare: {cfg.net.name} on {cfg.data.name} ({cfg.mode} training)\n\n{words}\n\n"
          f"{config['train_images']:,} training / {config['val_images']:,} validation images, {cfg.epochs} epochs, "
          f"{config['seeds_done']} seed(s), {cfg.device}, {config['threads']} threads, torch {torch.__version__}; "
          f"{seconds:.0f} s in all.\n\n{table}\n")
    png = io.BytesIO()
    report.plot(rows, png, cfg.control, f"{cfg.net.name} on {cfg.data.name}: {cfg.epochs} epochs, "
                                        f"{config['train_images']:,} images, {config['seeds_done']} seed(s)")
    files = {"results.json": json.dumps(_no_nan({"config": config, "conclusion": words, "runs": runs,
                                                 "summary": rows, "deploy_groups": list((groups or {}).values())}),
                                        indent=2),
             "results.csv": csv_text.getvalue(), "results.md": md, "plot.png": png.getvalue()}
    publish(cfg.out, files, remove=(PARTIAL, "runs.partial.json"))
    return rows


def default_blocks(net: NetSpec) -> list[str]:
    """Every shipped block spec that fits the net."""
    return [n for n in list_specs() if block_fits(net, get_spec(n))]


def run_compare(cfg: CompareConfig) -> list[dict] | None:
    """Train, fold, verify and measure every block; write the results into ``cfg.out``.

    Seeds run in rounds (every block with seed 0, then every block with seed 1, ...), so that a time
    budget or an interruption leaves every block with the same seeds. The output folder is held by
    this run (a lock file: a second run into it is refused before any training) and checked writable
    first. Results appear together at the end; an interrupted run leaves the previous complete
    results untouched and its own trainings in ``results.partial.json``.
    """
    if not cfg.blocks:
        raise SpecError("no block to compare (every block was left out)")
    init_distributed(cfg.device)
    rank, world = dist_env()
    for b in cfg.blocks:  # validate every block on the net before training anything
        label = b if isinstance(b, str) else b.name
        try:
            subject = build_subject(cfg, b)
        except SpecError as exc:
            raise SpecError(f"block {label!r} does not fit net {cfg.net.name!r}: {exc}") from None
        if isinstance(b, RepOpt):  # a branch outside RepOptimizer's equivalence is refused now, not after training
            try:
                repopt(subject, lr=cfg.lr)
            except SpecError as exc:
                raise SpecError(f"block {label!r} cannot train as a RepOptimizer: {exc}") from None
    labels = [b if isinstance(b, str) else b.name for b in cfg.blocks]
    lock = RunLock(cfg.out, "reparam-zoo compare " + " ".join(labels)) if rank == 0 else None
    if lock is not None:
        lock.acquire()
    if cfg.progress and rank == 0:
        print(f"compare: {len(cfg.blocks)} block(s) x {cfg.seeds} seed(s) on {cfg.data.name} "
              f"({len(cfg.data.train_x):,} training, {len(cfg.data.val_x):,} validation images), {cfg.epochs} "
              f"epoch(s)", file=sys.stderr)
    runs: list[dict] = []
    try:
        t0 = time.perf_counter()
        stopped_early = False
        for seed in range(cfg.seeds):
            round_start = time.perf_counter()
            for block in cfg.blocks:
                r = train_and_measure(cfg, block, seed)
                if r is not None:
                    runs.append(r)
                    write_partial(cfg, runs, time.perf_counter() - t0)
                    if cfg.progress:
                        print(f"{r['block']} seed {seed}: val acc {100 * r['val_acc']:.2f}% (deployed "
                              f"{100 * r['deploy_val_acc']:.2f}%, max logit diff {r['max_logit_diff']:.1e})",
                              file=sys.stderr)
            now = time.perf_counter()
            if seed + 1 < cfg.seeds and _out_of_time(cfg, now - t0, now - round_start, world):
                stopped_early = True
                print(f"reparam-zoo: time budget: stopping after {seed + 1} of {cfg.seeds} seeds "
                      f"({now - t0:.0f} s spent, a round takes {now - round_start:.0f} s)", file=sys.stderr)
                break
        if world > 1:  # everyone waits for rank 0's last evaluation, then the group ends on every rank together:
            dist.barrier()  # a rank that exits while another still holds the connections can abort it (gloo)
            dist.destroy_process_group()
        if rank != 0:
            return None
        groups = measure_deploy_groups(cfg, runs) if not cfg.run_latency else None
        return write_outputs(cfg, runs, time.perf_counter() - t0, groups, stopped_early)
    except KeyboardInterrupt:
        if rank == 0:
            kept = f"{len(runs)} finished training(s) in {cfg.out / PARTIAL}" if runs else "no finished training"
            print(f"reparam-zoo: interrupted: {kept}; any results.* files in {cfg.out} are from the previous "
                  "complete run", file=sys.stderr)
        raise
    finally:
        if lock is not None:
            lock.release()


def _out_of_time(cfg: CompareConfig, spent: float, last_round: float, world: int) -> bool:
    """Whether another round of seeds would overrun ``cfg.time_budget`` (decided by rank 0 and shared,
    so that every process stops after the same round)."""
    if cfg.time_budget is None:
        return False
    device = torch.device("cuda", torch.cuda.current_device()) if cfg.device == "cuda" else torch.device("cpu")
    stop = torch.tensor([float(spent + last_round > cfg.time_budget)], device=device)  # NCCL needs CUDA tensors
    if world > 1:
        dist.broadcast(stop, src=0)
    return bool(stop.item())


__all__ = ["CONTROL", "CompareConfig", "PARTIAL", "RESULT_FILES", "default_blocks", "measure_deploy_groups",
           "run_compare", "write_outputs", "write_partial"]
