"""`reparam-zoo compare`: the same net with each block, trained, folded, verified and measured.

Single process, or one process per GPU/CPU slot under ``torchrun`` (DistributedDataParallel;
on CUDA the BatchNorms become SyncBatchNorm — torch's SyncBatchNorm is GPU-only, so CPU
processes under gloo keep per-process statistics). Only rank 0 evaluates, folds, measures
and writes.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import io
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from reparam_zoo.bench.data import Dataset
from reparam_zoo.errors import SpecError
from reparam_zoo.engine.fold import fold_model
from reparam_zoo.engine.nets import NetSpec, block_fits, build_model
from reparam_zoo.outputs import RunLock, publish, write_json
from reparam_zoo.engine.cost import count_macs, count_params, saved_tensor_mb
from reparam_zoo.spec.schema import get_spec, list_specs
from reparam_zoo.stats import spread
from reparam_zoo.bench import report


@dataclass
class CompareConfig:
    net: NetSpec  # or a user_models.UserModel (compare --model): anything with name, input_size, build()
    data: Dataset
    blocks: list[str]
    epochs: int = 5
    seeds: int = 1
    device: str = "cpu"
    out: Path = Path("runs/compare")
    batch_size: int = 64
    lr: float = 0.05
    latency_batch: int = 64
    latency_runs: int = 20
    progress: bool = True
    mode: str = "offline"
    penalty: object = None  # optional callable(model) -> scalar added to the loss (e.g. an L1 on gates)
    after_step: object = None  # optional callable(model, lr): after each optimizer step (a proximal update)
    on_epoch: object = None  # optional callable(epoch, model): after each epoch (may raise to stop: pruning)
    extra: dict = field(default_factory=dict)
    control: str | None = None  # the block every other is compared with (paired over seeds), e.g. "plain"
    time_budget: float | None = None  # seconds: no new round of seeds starts that would not fit
    run_latency: bool = True  # per-run latencies (search); compare measures each distinct deployed net once
    int8: bool = False  # also quantize every deployed net with ONNX Runtime and measure it (compare --int8)
    int8_calibration: int = 256  # calibration images (the first of the training set)


# ----------------------------------------------------------------------------- distributed


def dist_env() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) otherwise."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def init_distributed(device: str) -> None:
    rank, world = dist_env()
    if world > 1 and not dist.is_initialized():
        # a lost or stuck rank becomes an error within minutes, not gloo's default 30-minute hang
        dist.init_process_group("nccl" if device == "cuda" else "gloo", timeout=datetime.timedelta(minutes=5))
        if device == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))


# ----------------------------------------------------------------------------- measuring


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device, batch: int = 256):
    model.eval()
    logits = torch.cat([model(x[i:i + batch].to(device)).float().cpu() for i in range(0, len(x), batch)])
    acc = (logits.argmax(1) == y).float().mean().item()
    return acc, logits


@torch.no_grad()
def latency_ms(model: nn.Module, shape: tuple[int, ...], device: torch.device, runs: int) -> float:
    """Median wall time of one eval forward (after warm-up)."""
    model.eval()
    x = torch.randn(shape, device=device)
    for _ in range(3):
        model(x)
    times = []
    for _ in range(runs):
        _sync(device)
        t0 = time.perf_counter()
        model(x)
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def saved_activation_mb(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """MiB autograd saves for backward in one training step (the training memory a block costs)."""
    model.train()
    mb = saved_tensor_mb(lambda: F.cross_entropy(model(x), y).backward())
    model.zero_grad(set_to_none=True)
    return mb


# ----------------------------------------------------------------------------- one run


def _progress(iterable, enabled: bool, desc: str, total: int):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False, file=sys.stderr, dynamic_ncols=True)


def build_subject(cfg: CompareConfig, block) -> nn.Module:
    """The network a run trains: the net spec with ``block``, or the user's model (``compare
    --model``, a :class:`~reparam_zoo.user_models.UserModel`) with ``block`` expanded into it."""
    if isinstance(cfg.net, NetSpec):
        return build_model(cfg.net, cfg.data.num_classes, block=block, in_channels=cfg.data.in_channels,
                           mode=cfg.mode)
    return cfg.net.build(block, cfg.data.num_classes)


def train_and_measure(cfg: CompareConfig, block, seed: int, label: str | None = None,
                      keep: dict | None = None) -> dict | None:
    """Train the net with ``block`` (a spec name, path or BlockSpec) for one seed; rank 0 returns
    the measurements, labelled ``label`` (default: the block's name)."""
    block_name = label or (block if isinstance(block, str) else block.name)
    rank, world = dist_env()
    device = torch.device(cfg.device if cfg.device != "cuda" else f"cuda:{torch.cuda.current_device()}")
    data = cfg.data
    torch.manual_seed(seed)
    model = build_subject(cfg, block).to(device)
    train_params = count_params(model)
    net = model
    if world > 1:
        if device.type == "cuda":  # torch's SyncBatchNorm is GPU-only; CPU processes keep per-process BN
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=1e-4, nesterov=True)
    steps_per_epoch = math.ceil(len(data.train_x) / (cfg.batch_size * world))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.epochs * steps_per_epoch,
                                                pct_start=0.15)
    gen = torch.Generator().manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step_times: list[float] = []
    last_loss = last_acc = float("nan")
    for epoch in range(cfg.epochs):
        net.train()
        perm = torch.randperm(len(data.train_x), generator=gen)
        if world > 1:  # every rank gets the same number of images (and so of steps and all-reduces):
            # pad the permutation by wrapping around, as DistributedSampler does
            pad = -len(perm) % world
            perm = torch.cat([perm, perm[:pad]])[rank::world]
        batches = [perm[i:i + cfg.batch_size] for i in range(0, len(perm), cfg.batch_size)]
        bar = _progress(batches, cfg.progress and rank == 0, f"{block_name} s{seed} epoch {epoch + 1}/{cfg.epochs}",
                        len(batches))
        loss_sum = correct = seen = 0.0
        for idx in bar:
            x, y = data.train_x[idx].to(device), data.train_y[idx].to(device)
            _sync(device)
            t0 = time.perf_counter()
            out = net(x)
            loss = F.cross_entropy(out, y)
            if cfg.penalty is not None:
                loss = loss + cfg.penalty(model)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if cfg.after_step is not None:
                cfg.after_step(model, opt.param_groups[0]["lr"])
            sched.step()
            _sync(device)
            step_times.append(time.perf_counter() - t0)
            loss_sum += loss.item() * len(idx)
            correct += (out.argmax(1) == y).sum().item()
            seen += len(idx)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
        last_loss, last_acc = loss_sum / max(seen, 1), correct / max(seen, 1)
        if cfg.progress and rank == 0:
            print(f"  {block_name} seed {seed} epoch {epoch + 1}/{cfg.epochs}: loss {last_loss:.4f} "
                  f"train acc {last_acc:.3f}", file=sys.stderr)
        if cfg.on_epoch is not None and epoch + 1 < cfg.epochs:  # the last epoch is measured below
            cfg.on_epoch(epoch, model)
    peak_mb = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    # a training-mode forward: every rank runs it (SyncBatchNorm on CUDA syncs across ranks in training mode)
    sample = data.train_x[: min(cfg.batch_size, len(data.train_x))].to(device)
    saved_mb = saved_activation_mb(model, sample, data.train_y[: len(sample)].to(device))
    if world > 1:
        dist.barrier()
    if rank != 0:
        return None
    if keep is not None:  # the caller wants the trained model (e.g. to derive from a supernet)
        keep["model"] = model

    # evaluate the training form, fold, evaluate the deployed form
    acc, logits = evaluate(model, data.val_x, data.val_y, device)
    deployed, report = fold_model(model, return_report=True)
    deploy_acc, deploy_logits = evaluate(deployed, data.val_x, data.val_y, device)
    finite = bool(torch.isfinite(logits).all()) and bool(torch.isfinite(deploy_logits).all())
    max_diff = (logits - deploy_logits).abs().max().item() if finite else float("inf")
    shape1 = (1, data.in_channels, cfg.net.input_size, cfg.net.input_size)
    step = spread([1e3 * t for t in (step_times[1:] or step_times)])  # the first step warms up
    result = {
        "block": block_name, "seed": seed, "epochs": cfg.epochs,
        "train_loss": last_loss, "train_acc": last_acc,
        "val_acc": acc, "deploy_val_acc": deploy_acc, "finite_outputs": finite,  # NaN logits "agree" in argmax
        "same_predictions": finite and bool((logits.argmax(1) == deploy_logits.argmax(1)).all()),
        "max_logit_diff": max_diff, "max_logit": logits.abs().max().item(),
        "folded_blocks": report.count,
        "sync_batchnorm": sum(isinstance(m, nn.SyncBatchNorm) for m in model.modules()),
        "train_params": train_params, "deploy_params": count_params(deployed),
        "train_macs": count_macs(model, shape1), "deploy_macs": count_macs(deployed, shape1),
        "train_step_ms": step["median"], "train_step_ms_q1": step["q1"], "train_step_ms_q3": step["q3"],
        "deploy_signature": hashlib.sha1(repr(deployed).encode()).hexdigest()[:10],
        "val_images": len(data.val_y), "failed": acc <= chance_level(data.num_classes, len(data.val_y)),
        "peak_cuda_mb": peak_mb,
        "saved_activations_mb": saved_mb,
    }
    if cfg.int8 and finite:  # a diverged net has no INT8 ranges to calibrate; it is reported as non-finite
        result.update(measure_int8(deployed, data, cfg.int8_calibration, deploy_acc))
    if cfg.run_latency:
        for b in (1, cfg.latency_batch):
            shape = (b, *shape1[1:])
            result[f"train_form_ms_b{b}"] = latency_ms(model, shape, device, cfg.latency_runs)
            result[f"deploy_ms_b{b}"] = latency_ms(deployed, shape, device, cfg.latency_runs)
    return result


def measure_int8(deployed: nn.Module, data: Dataset, calibration: int, deploy_acc: float) -> dict:
    """The deployed net quantized by ONNX Runtime (``quantize.quantize_onnx``: QDQ, int8 weights per channel,
    activations calibrated on the first ``calibration`` training images) and run on the validation set:
    INT8 accuracy, its drop from the deployed FP32 accuracy, INT8 vs FP32 agreement, and the folded
    kernels' statistics per layer."""
    import tempfile

    from reparam_zoo.interop.quantize import quantize_onnx, worst

    with tempfile.TemporaryDirectory() as tmp:
        rep = quantize_onnx(deployed, data.train_x[:calibration], Path(tmp) / "int8.onnx", check=data.val_x,
                            labels=data.val_y)
    layers = rep.layers
    return {"int8_val_acc": rep.int8_accuracy, "onnx_fp32_val_acc": rep.fp32_accuracy,
            "int8_drop": deploy_acc - rep.int8_accuracy, "int8_agreement": rep.top1_agreement,
            "int8_max_logit_diff": rep.max_logit_diff, "int8_calibration_images": rep.calibration_images,
            "int8_quantized_convs": rep.quantized_convs,
            "kernel_range_ratio_max": worst(layers, "range_ratio"),
            "kernel_kurtosis_max": worst(layers, "kurtosis_max"),
            "kernel_layers": layers}


def chance_level(num_classes: int, n_val: int) -> float:
    """The accuracy below which a training counts as failed: chance (1 / classes) plus three standard
    errors of a guesser's accuracy on ``n_val`` images."""
    p = 1.0 / num_classes
    return p + 3 * math.sqrt(p * (1 - p) / max(n_val, 1))


def measure_deploy_groups(cfg: CompareConfig, runs: list[dict], repeats: int = 5) -> dict[str, dict]:
    """One latency measurement per distinct deployed network: blocks that fold to the same convs
    (the same ``deploy_signature``) share it, so timing noise cannot rank identical nets. Each
    latency is measured ``repeats`` times (each a median of ``latency_runs`` forwards), reported as
    median and interquartile range."""
    device = torch.device(cfg.device if cfg.device != "cuda" else f"cuda:{torch.cuda.current_device()}")
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
        try:
            build_subject(cfg, b)
        except SpecError as exc:
            raise SpecError(f"block {b!r} does not fit net {cfg.net.name!r}: {exc}") from None
    lock = RunLock(cfg.out, "reparam-zoo compare " + " ".join(map(str, cfg.blocks))) if rank == 0 else None
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


__all__ = ["CompareConfig", "default_blocks", "run_compare"]
