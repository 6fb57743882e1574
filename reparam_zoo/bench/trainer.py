"""The one trainer of compare, the search study and the supernet: a net with one block, trained for
one seed (one-cycle SGD, cross-entropy), then folded, verified and measured.

Single process, or one process per GPU/CPU slot under ``torchrun`` (DistributedDataParallel; on
CUDA the BatchNorms become SyncBatchNorm — torch's SyncBatchNorm is GPU-only, so CPU processes
under gloo keep per-process statistics). Only rank 0 evaluates, folds and measures.

What a caller adds to the training is said by :class:`TrainHooks`: a loss term, an update after
each optimizer step, a call after each epoch.
"""

from __future__ import annotations

import datetime
import hashlib
import math
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from reparam_zoo.bench.data import Dataset
from reparam_zoo.bench.measure import chance_level, evaluate, latency_ms, measure_int8, saved_activation_mb, sync_device
from reparam_zoo.engine.cost import count_macs, count_params
from reparam_zoo.engine.fold import fold_model
from reparam_zoo.engine.nets import NetSpec, build_model
from reparam_zoo.engine.repopt import freeze_scales, repopt
from reparam_zoo.engine.steps import ChannelScale
from reparam_zoo.errors import SpecError
from reparam_zoo.spec.lookup import csla_form, resolve_spec
from reparam_zoo.spec.schema import BlockSpec
from reparam_zoo.stats import spread

if TYPE_CHECKING:
    from reparam_zoo.interop.user_models import UserModel

#: ``penalty(model) -> loss term``: a scalar tensor added to the cross-entropy of every step (e.g. an L1 on gates)
Penalty = Callable[[nn.Module], torch.Tensor]
#: ``after_step(model, lr)``: called after every optimizer step with the step's learning rate (a proximal update)
AfterStep = Callable[[nn.Module, float], None]
#: ``on_epoch(epoch, model)``: called after every epoch but the last (0-based ``epoch``); may raise to stop the
#: training (a pruned trial) or change the model in place (progressive elimination)
OnEpoch = Callable[[int, nn.Module], None]


@dataclass(frozen=True)
class TrainHooks:
    """What a caller adds to a training; each hook is optional. ``model`` is always the bare network
    (never the DistributedDataParallel wrapper), so a hook sees the same modules in every process."""

    penalty: Penalty | None = None
    after_step: AfterStep | None = None
    on_epoch: OnEpoch | None = None


NO_HOOKS = TrainHooks()


@dataclass
class TrainConfig:
    """How one network is trained and measured (compare's :class:`~reparam_zoo.bench.compare.CompareConfig`
    adds the blocks, seeds and output folder of a comparison)."""

    net: NetSpec | UserModel  # a net spec, or the user's model (compare --model): name, input_size, build()
    data: Dataset
    epochs: int = 5
    device: str = "cpu"
    batch_size: int = 64
    lr: float = 0.05
    latency_batch: int = 64
    latency_runs: int = 20
    progress: bool = True
    mode: str = "offline"
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


def run_device(device: str) -> torch.device:
    """The torch device of a run: ``cuda`` is this process's current CUDA device."""
    return torch.device(device if device != "cuda" else f"cuda:{torch.cuda.current_device()}")


# ----------------------------------------------------------------------------- one run


def _progress(iterable: Iterable, enabled: bool, desc: str, total: int) -> Iterable:
    """A progress bar on a terminal; elsewhere (a log file, a pipe) nothing: the trainer prints one line per
    epoch either way, and carriage-return bars would flood the log."""
    if not enabled or not sys.stderr.isatty():
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False, file=sys.stderr, dynamic_ncols=True)


@dataclass(frozen=True)
class RepOpt:
    """A block trained as a RepOptimizer (``compare repopt:NAME``): the block's CSLA form
    (:func:`~reparam_zoo.spec.lookup.csla_form`) with learnable scales trained ``search_epochs`` epochs on the
    task (the paper's hyper-search), its scales frozen into a freshly initialised CSLA net (same seed), which
    :func:`~reparam_zoo.engine.repopt.repopt` compiles: the plain net trained with :class:`RepOptSGD`."""

    block: str | BlockSpec
    search_epochs: int = 1

    def __post_init__(self):
        if isinstance(self.search_epochs, bool) or not isinstance(self.search_epochs, int) or self.search_epochs < 1:
            raise SpecError(f"Expected search_epochs >= 1 (the scales' hyper-search) but got {self.search_epochs!r}")

    @property
    def name(self) -> str:
        return f"repopt:{self.block if isinstance(self.block, str) else self.block.name}"

    def spec(self, learnable: bool) -> BlockSpec:
        return csla_form(resolve_spec(self.block), learnable)


def build_subject(cfg: TrainConfig, block: str | BlockSpec | RepOpt) -> nn.Module:
    """The network a run trains: the net spec with ``block``, or the user's model (``compare
    --model``, a :class:`~reparam_zoo.interop.user_models.UserModel`) with ``block`` expanded into it;
    for a :class:`RepOpt`, the net with the block's CSLA form (constant scales)."""
    if isinstance(block, RepOpt):
        if not isinstance(cfg.net, NetSpec):
            raise SpecError(f"{block.name}: RepOptimizer runs train a net spec's blocks, not a --model")
        return build_model(cfg.net, cfg.data.num_classes, block=block.spec(learnable=False),
                           in_channels=cfg.data.in_channels, mode="offline")  # RepOptimizer's equivalence: offline
    if isinstance(cfg.net, NetSpec):
        return build_model(cfg.net, cfg.data.num_classes, block=block, in_channels=cfg.data.in_channels,
                           mode=cfg.mode)
    return cfg.net.build(block, cfg.data.num_classes)


#: the optimizer every run uses: SGD with Nesterov momentum and weight decay, one-cycle learning rate
MOMENTUM, WEIGHT_DECAY = 0.9, 1e-4


def _sgd(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=cfg.lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, nesterov=True)


def train_and_measure(cfg: TrainConfig, block: str | BlockSpec | RepOpt, seed: int, label: str | None = None,
                      keep: dict | None = None, hooks: TrainHooks = NO_HOOKS) -> dict | None:
    """Train the net with ``block`` (a spec name, path or BlockSpec; a :class:`RepOpt` trains the block as a
    RepOptimizer) for one seed, with ``hooks``; rank 0 returns the measurements, labelled ``label`` (default:
    the block's name), and puts the trained model in ``keep["model"]`` if ``keep`` is given (e.g. to derive
    from a supernet)."""
    block_name = label or (block if isinstance(block, str) else block.name)
    rank, _ = dist_env()
    device = run_device(cfg.device)
    extra: dict = {}
    if isinstance(block, RepOpt):
        model, opt, extra = _compile_repopt(cfg, block, seed, block_name)
    else:
        torch.manual_seed(seed)
        model = build_subject(cfg, block).to(device)
        opt = _sgd(model.parameters(), cfg)
    train_params = count_params(model)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step_times, last_loss, last_acc = _fit(cfg, model, opt, seed, cfg.epochs, block_name, hooks)
    peak_mb = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    # a training-mode forward: every rank runs it (SyncBatchNorm on CUDA syncs across ranks in training mode)
    sample = cfg.data.train_x[: min(cfg.batch_size, len(cfg.data.train_x))].to(device)
    saved_mb = saved_activation_mb(model, sample, cfg.data.train_y[: len(sample)].to(device))
    if dist_env()[1] > 1:
        dist.barrier()
    if rank != 0:
        return None
    if keep is not None:
        keep["model"] = model
    trained = {"block": block_name, "seed": seed, "epochs": cfg.epochs, "train_loss": last_loss, "train_acc": last_acc,
               **extra}
    memory = {"peak_cuda_mb": peak_mb, "saved_activations_mb": saved_mb}
    return _measure_trained(cfg, model, device, trained, train_params, step_times, memory)


def _compile_repopt(cfg: TrainConfig, run: RepOpt, seed: int, label: str) -> tuple[nn.Module, torch.optim.Optimizer,
                                                                                 dict]:
    """The hyper-search (the CSLA net with learnable scales, ``run.search_epochs`` epochs on the task), its
    scales frozen into a fresh CSLA net of the same seed, compiled: ``(plain net, RepOptSGD, what it took)``."""
    device = run_device(cfg.device)
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    searched = build_model(cfg.net, cfg.data.num_classes, block=run.spec(learnable=True),
                           in_channels=cfg.data.in_channels, mode="offline").to(device)
    _fit(cfg, searched, _sgd(searched.parameters(), cfg), seed, run.search_epochs, f"{label} search", NO_HOOKS)
    scales = {n: m.weight for n, m in freeze_scales(searched).named_modules() if isinstance(m, ChannelScale)}
    torch.manual_seed(seed)
    csla = build_subject(cfg, run).to(device)
    with torch.no_grad():
        for n, m in csla.named_modules():
            if isinstance(m, ChannelScale) and n in scales:
                m.weight.copy_(scales[n])
    plain, opt = repopt(csla, lr=cfg.lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, nesterov=True)
    return plain, opt, {"search_epochs": run.search_epochs, "search_seconds": time.perf_counter() - t0}


def _fit(cfg: TrainConfig, model: nn.Module, opt: torch.optim.Optimizer, seed: int, epochs: int, label: str,
         hooks: TrainHooks) -> tuple[list[float], float, float]:
    """``epochs`` epochs of ``opt`` with a one-cycle learning rate (DistributedDataParallel under torchrun):
    ``(step times, last epoch's loss, last epoch's training accuracy)``."""
    rank, world = dist_env()
    device = run_device(cfg.device)
    data = cfg.data
    net = model
    if world > 1:
        if device.type == "cuda":  # torch's SyncBatchNorm is GPU-only; CPU processes keep per-process BN
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    steps_per_epoch = math.ceil(len(data.train_x) / (cfg.batch_size * world))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=epochs * steps_per_epoch, pct_start=0.15)
    gen = torch.Generator().manual_seed(seed)
    step_times: list[float] = []
    last_loss = last_acc = float("nan")
    for epoch in range(epochs):
        net.train()
        perm = torch.randperm(len(data.train_x), generator=gen)
        if world > 1:  # every rank gets the same number of images (and so of steps and all-reduces):
            # pad the permutation by wrapping around, as DistributedSampler does
            pad = -len(perm) % world
            perm = torch.cat([perm, perm[:pad]])[rank::world]
        batches = [perm[i:i + cfg.batch_size] for i in range(0, len(perm), cfg.batch_size)]
        bar = _progress(batches, cfg.progress and rank == 0, f"{label} s{seed} epoch {epoch + 1}/{epochs}",
                        len(batches))
        loss_sum = correct = seen = 0.0
        for idx in bar:
            x, y = data.train_x[idx].to(device), data.train_y[idx].to(device)
            sync_device(device)
            t0 = time.perf_counter()
            out = net(x)
            loss = F.cross_entropy(out, y)
            if hooks.penalty is not None:
                loss = loss + hooks.penalty(model)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if hooks.after_step is not None:
                hooks.after_step(model, opt.param_groups[0]["lr"])
            sched.step()
            sync_device(device)
            step_times.append(time.perf_counter() - t0)
            loss_sum += loss.item() * len(idx)
            correct += (out.argmax(1) == y).sum().item()
            seen += len(idx)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
        last_loss, last_acc = loss_sum / max(seen, 1), correct / max(seen, 1)
        if cfg.progress and rank == 0:
            print(f"  {label} seed {seed} epoch {epoch + 1}/{epochs}: loss {last_loss:.4f} "
                  f"train acc {last_acc:.3f}", file=sys.stderr)
        if hooks.on_epoch is not None and epoch + 1 < epochs:  # the last epoch is measured below
            hooks.on_epoch(epoch, model)
    return step_times, last_loss, last_acc


def _measure_trained(cfg: TrainConfig, model: nn.Module, device: torch.device, trained: dict, train_params: int,
                     step_times: list[float], memory: dict) -> dict:
    """Rank 0 after training: evaluate the training form, fold, evaluate the deployed form, count and time
    both; the row of the run, ``trained`` (what the training said) first, ``memory`` after the counts."""
    data = cfg.data
    acc, logits = evaluate(model, data.val_x, data.val_y, device)
    deployed, report = fold_model(model, return_report=True)
    deploy_acc, deploy_logits = evaluate(deployed, data.val_x, data.val_y, device)
    finite = bool(torch.isfinite(logits).all()) and bool(torch.isfinite(deploy_logits).all())
    max_diff = (logits - deploy_logits).abs().max().item() if finite else float("inf")
    shape1 = (1, data.in_channels, cfg.net.input_size, cfg.net.input_size)
    step = spread([1e3 * t for t in (step_times[1:] or step_times)])  # the first step warms up
    result = {
        **trained,
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
        **memory,
    }
    if cfg.int8 and finite:  # a diverged net has no INT8 ranges to calibrate; it is reported as non-finite
        result.update(measure_int8(deployed, data, cfg.int8_calibration, deploy_acc))
    if cfg.run_latency:
        for b in (1, cfg.latency_batch):
            shape = (b, *shape1[1:])
            result[f"train_form_ms_b{b}"] = latency_ms(model, shape, device, cfg.latency_runs)
            result[f"deploy_ms_b{b}"] = latency_ms(deployed, shape, device, cfg.latency_runs)
    return result


__all__ = ["AfterStep", "MOMENTUM", "NO_HOOKS", "OnEpoch", "Penalty", "RepOpt", "TrainConfig", "TrainHooks",
           "WEIGHT_DECAY", "build_subject", "dist_env", "init_distributed", "run_device", "train_and_measure"]
