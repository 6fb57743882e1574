"""Search with Optuna underneath: a search space's choice points become Optuna distributions, one
trial trains one candidate with the compare harness, and the study lives in a storage that many
``reparam-zoo search`` processes (on one machine or many sharing a database) work on together.

What reparam_zoo adds to Optuna: the spaces, every candidate validated and folded exactly, the
same candidate never trained twice (trials carry the candidate's hash; the lowest-numbered trial
with a hash trains it, a later one either reuses its finished result or is dropped while it runs),
resumption after a kill and workers dying on any host (search/liveness: a trial whose worker is gone is
marked failed and its candidate queued again) and the per-epoch validation accuracy that Optuna's pruners need.

Needs ``pip install 'reparam_zoo[search]'`` (Optuna).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from reparam_zoo.bench.compare import CompareConfig
from reparam_zoo.bench.data import Dataset
from reparam_zoo.bench.measure import evaluate
from reparam_zoo.bench.trainer import OnEpoch, TrainHooks, train_and_measure
from reparam_zoo.errors import SpecError
from reparam_zoo.search.liveness import (
    GRACE,
    HEARTBEAT,
    Heartbeat,
    fail_dead_trials,
    gone_here,
    on_stale,
    owner,
    still_running,
)
from reparam_zoo.search.space import CHOICE, SearchSpace, expand_choices, is_choice, spec_hash

SAMPLERS = ("random", "tpe", "grid", "nsga2")
PRUNERS = ("median", "hyperband", "none")
COSTS = ("train_macs", "deploy_macs", "deploy_params", "train_step_ms", "deploy_ms")


def _optuna():
    try:
        import optuna
    except ImportError:
        raise SpecError("search needs Optuna: pip install 'reparam_zoo[search]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


# ----------------------------------------------------------------------------- space -> distributions


def suggest(trial, node: Any, path: str) -> Any:
    """The concrete value of a template node, every choice point asked of ``trial`` as a categorical
    parameter named by its location (``block.branches.1``) over the option indices (define-by-run:
    a choice inside an option is asked only when that option is taken)."""
    if is_choice(node):
        options = node[CHOICE]
        i = trial.suggest_categorical(path, list(range(len(options))))
        return suggest(trial, options[i], f"{path}.{i}")
    if isinstance(node, Mapping):
        return {k: suggest(trial, v, f"{path}.{k}") for k, v in node.items()}
    if isinstance(node, list):
        return [v for v in (suggest(trial, x, f"{path}.{i}") for i, x in enumerate(node)) if v is not None]
    return node


def candidate_hash(spec, net_yaml: str | None) -> str:
    """The identity of a candidate: its block spec, and its net when the space searches nets too."""
    if net_yaml is None:
        return spec_hash(spec)
    return hashlib.sha256((spec_hash(spec) + net_yaml).encode()).hexdigest()[:12]


def grid_candidates(space: SearchSpace, limit: int = 100_000) -> list[tuple[Any, Any]]:
    """Every valid distinct (block spec, net spec or None) of a finite space, for the grid sampler."""
    from reparam_zoo.engine.nets import load_net

    blocks = space.enumerate(limit)
    if space.net_template is None:
        return [(b, None) for b in blocks]
    nets = []
    for data in expand_choices(space.net_template):
        try:
            nets.append(load_net(data))
        except SpecError:
            continue
    if len(blocks) * len(nets) > limit:
        raise SpecError(f"the space has {len(blocks) * len(nets):,} block x net candidates, more than {limit:,} "
                        "for a grid; use --sampler tpe or random")
    return [(b, n) for b in blocks for n in nets]


# ----------------------------------------------------------------------------- the study


@dataclass
class SearchConfig:
    space: SearchSpace
    compare: CompareConfig  # how each trial trains (net, data: validation = the held-out split, epochs, ...), out
    budget: int = 8  # distinct candidates trained (finished or pruned) in the study, all processes together
    sampler: str = "tpe"
    pruner: str = "median"
    cost: str | None = None  # a second objective (minimised) next to accuracy; nsga2 needs one
    seed: int = 0
    storage: str = "sqlite:///runs/search/study.db"
    study: str = "search"
    startup: int | None = None  # random trials before TPE models the space
    heartbeat: int = HEARTBEAT  # seconds between a running trial's heartbeats in the storage
    grace: int = GRACE  # seconds without a heartbeat after which a trial's worker counts as dead (any host)


def storage_url(storage: str | None, out: Path) -> str:
    """``--storage``: a database URL Optuna accepts, or a file path (an SQLite file); default ``out/study.db``."""
    if not storage:
        storage = str(out / "study.db")
    if "://" in storage:
        return storage
    return "sqlite:///" + str(Path(storage).resolve())


def _storage(url: str, heartbeat: int = HEARTBEAT, grace: int = GRACE):
    optuna = _optuna()
    kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
    for attempt in range(5):
        try:
            with warnings.catch_warnings():  # heartbeats are marked experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=heartbeat,
                                                  grace_period=grace, heartbeat_stale_trial_callback=on_stale)
        except Exception as exc:  # noqa: BLE001 - any driver/URL error is the user's --storage
            # two processes creating the same new database race on its tables: the loser retries
            if any(m in str(exc) for m in ("UNIQUE constraint", "already exists", "locked")) and attempt < 4:
                time.sleep(0.5 + attempt)
                continue
            raise SpecError(f"--storage {url}: {str(exc).splitlines()[0][:200]}") from None


def _sampler(sc: SearchConfig, n_existing: int, grid_size: int):
    optuna = _optuna()
    seed = sc.seed + n_existing  # a resumed or second process does not replay the first one's draws
    if sc.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if sc.sampler == "tpe":
        startup = sc.startup if sc.startup is not None else min(10, max(4, sc.budget // 4))
        with warnings.catch_warnings():  # multivariate/group are marked experimental; conditional spaces need them
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True, group=True,
                                              constant_liar=True)
    if sc.sampler == "grid":
        class Grid(optuna.samplers.GridSampler):
            def after_trial(self, study, trial, state, values):  # it calls study.stop(), for optimize() only:
                pass  # here the loop ends when the study holds every candidate (budget = grid size)

        return Grid({"candidate": list(range(grid_size))}, seed=seed)
    if sc.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, sc.budget // 3)))
    raise SpecError(f"Expected a sampler in {SAMPLERS} but got {sc.sampler!r}", "sampler")


def _pruner(sc: SearchConfig):
    optuna = _optuna()
    if sc.pruner == "none" or sc.cost is not None:
        return optuna.pruners.NopPruner()
    if sc.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=0)
    if sc.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=sc.compare.epochs, reduction_factor=3)
    raise SpecError(f"Expected a pruner in {PRUNERS} but got {sc.pruner!r}", "pruner")


def _identity(sc: SearchConfig) -> dict:
    """What a study is about; a resumed or joining process must agree (checked)."""
    c = sc.compare
    return {"space": sc.space.name, "space_size": sc.space.size(), "net": c.net.name, "data": c.data.name,
            "train_images": len(c.data.train_x), "val_images": len(c.data.val_x), "epochs": c.epochs,
            "seed": sc.seed, "cost": sc.cost, "grid": sc.sampler == "grid"}


def open_study(sc: SearchConfig, grid_size: int = 0):
    """The study ``sc`` names in its storage (created, or loaded and checked to have the same settings)."""
    return _open(sc, grid_size)[0]


def _open(sc: SearchConfig, grid_size: int = 0):
    optuna = _optuna()
    if sc.grace <= sc.heartbeat:
        raise SpecError(f"--grace {sc.grace} must be longer than --heartbeat {sc.heartbeat} (a few heartbeats)")
    storage = _storage(sc.storage, sc.heartbeat, sc.grace)
    directions = ["maximize"] + (["minimize"] if sc.cost else [])
    try:
        existing = optuna.load_study(study_name=sc.study, storage=storage)
    except KeyError:
        existing = None
    n_existing = len(existing.trials) if existing is not None else 0
    try:
        study = optuna.create_study(study_name=sc.study, storage=storage, load_if_exists=True, directions=directions,
                                    sampler=_sampler(sc, n_existing, grid_size), pruner=_pruner(sc))
    except ValueError as exc:  # e.g. the stored study has other directions
        raise SpecError(f"study {sc.study!r} in {sc.storage}: {exc}") from None
    me = _identity(sc)
    stored = study.user_attrs.get("reparam_zoo")
    if stored is None:
        study.set_user_attr("reparam_zoo", me)
    elif stored != me:
        diff = ", ".join(f"{k} {stored.get(k)!r} (now {me.get(k)!r})" for k in me if stored.get(k) != me.get(k))
        raise SpecError(f"study {sc.study!r} in {sc.storage} was started with other settings: {diff}; "
                        "give the same ones to resume or join it, or another --study")
    return study, storage


def _counted(t) -> bool:
    """A trial that spent a training on a new candidate (finished or pruned)."""
    return "hash" in t.user_attrs and "duplicate_of" not in t.user_attrs


def progress_counts(study) -> tuple[int, int]:
    """(candidates trained or pruned, candidates being trained now) over every process of the study."""
    optuna = _optuna()
    S = optuna.trial.TrialState
    done = sum(1 for t in study.get_trials(deepcopy=False, states=(S.COMPLETE, S.PRUNED)) if _counted(t))
    # a running trial counts until it turns out a duplicate or invalid (also before it has drawn its
    # candidate), so that processes finishing together do not each start one more than the budget
    running = sum(1 for t in study.get_trials(deepcopy=False, states=(S.RUNNING,))
                  if "owner" in t.user_attrs and "duplicate_of" not in t.user_attrs and "invalid" not in t.user_attrs
                  and not gone_here(t))
    return done, running


def candidate_holder(study, trial, h: str, S, running_rule):
    """The lowest-numbered other trial that keeps candidate ``h``: finished (complete or pruned), or
    running, alive and accepted by ``running_rule``; None if there is none."""
    same = [t for t in study.get_trials(deepcopy=False, states=(S.COMPLETE, S.PRUNED, S.RUNNING))
            if t.number != trial.number and t.user_attrs.get("hash") == h and _counted(t)
            and (t.state != S.RUNNING or (not gone_here(t) and running_rule(t)))]
    return min(same, key=lambda t: t.number) if same else None


def _values(sc: SearchConfig, row: dict) -> list[float]:
    return [row["val_acc"]] + ([float(row[sc.cost])] if sc.cost else [])


def run_study(sc: SearchConfig, log=print) -> tuple[Any, dict]:
    """Work on the study until it holds ``budget`` trained candidates (with every other process on
    the same storage and study); returns the study and this process's counts."""
    optuna = _optuna()
    grid = grid_candidates(sc.space) if sc.sampler == "grid" else None
    if sc.sampler == "nsga2" and not sc.cost:
        raise SpecError("the nsga2 sampler needs a second objective: give --cost (e.g. train_macs)", "cost")
    if sc.sampler == "grid" and sc.budget > len(grid):
        log(f"the space has {len(grid)} valid candidates: the grid trains all of them (budget {sc.budget})")
        sc = dataclasses.replace(sc, budget=len(grid))
    study, storage = _open(sc, len(grid) if grid else 0)
    counts = {"trained": 0, "pruned": 0, "reused": 0, "skipped_running": 0, "invalid": 0, "dead_failed": 0,
              "lost": 0}
    attempts = 0
    while True:
        killed, silent = fail_dead_trials(study)
        if killed or silent:
            counts["dead_failed"] += killed + silent
            how = [f"{killed} killed on this host"] * bool(killed) + [f"{silent} with no heartbeat for {sc.grace} s"
                                                                      ] * bool(silent)
            log(f"{killed + silent} trial(s) left running by a process that is gone ({', '.join(how)}): marked "
                "failed, their candidates queued again")
        done, running = progress_counts(study)
        if done >= sc.budget:
            break
        if done + running >= sc.budget:  # the rest is being trained elsewhere: wait, in case a worker dies
            time.sleep(min(sc.heartbeat, 5))
            continue
        attempts += 1
        if attempts > 50 * sc.budget:
            log(f"stopped after {attempts - 1} draws: the sampler keeps proposing candidates already in the study")
            break
        with warnings.catch_warnings():  # Optuna expects heartbeats under Study.optimize; Heartbeat records them
            warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used with Study.optimize")
            trial = study.ask()
        beat = Heartbeat(storage, sc.study, trial.number, log)  # until told: other hosts see it alive
        try:
            _one_trial(sc, study, trial, grid, counts, log, done)
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
            if still_running(study, trial.number):
                raise
            counts["lost"] += 1  # silent longer than --grace (a stalled database?): another worker failed it
            log(f"trial {trial.number} was marked failed by another worker while this one worked on it (no "
                f"heartbeat for {sc.grace} s): its result is dropped, its candidate queued again")
        finally:
            beat.stop()
    return study, counts


def _one_trial(sc: SearchConfig, study, trial, grid, counts: dict, log, done: int) -> None:
    """One asked trial: its candidate drawn (or the grid's), checked, deduplicated against every other
    trial of the study, trained with per-epoch reports to the pruner, told."""
    import yaml

    from reparam_zoo.engine.nets import build_model

    optuna = _optuna()
    S = optuna.trial.TrialState
    cfg = sc.compare
    data = cfg.data
    trial.set_user_attr("owner", owner())
    try:
        if grid is not None:
            spec, net = grid[trial.suggest_categorical("candidate", list(range(len(grid))))]
        else:
            data_ = suggest(trial, sc.space.template, "block")
            net = None
            if sc.space.net_template is not None:
                from reparam_zoo.engine.nets import load_net

                net = load_net(suggest(trial, sc.space.net_template, "net"))
            spec = sc.space.candidate(data_)
            if spec is None:
                raise SpecError("the drawn block does not build at the space's geometry")
        net = net or cfg.net
        build_model(net, data.num_classes, block=spec, in_channels=data.in_channels)
    except SpecError as exc:
        counts["invalid"] += 1
        trial.set_user_attr("invalid", str(exc)[:300])
        study.tell(trial, state=S.FAIL)
        return
    net_yaml = yaml.safe_dump(net.model_dump(mode="json"), sort_keys=False)
    h = candidate_hash(spec, net_yaml if sc.space.net_template is not None else None)
    trial.set_user_attr("hash", h)
    # the same candidate in another trial? Each trial writes its hash, then looks: one that finished, one
    # already training, or a lower-numbered one that has not decided yet, keeps the candidate. A trial that
    # finds none marks itself training and looks again, yielding to any lower-numbered one still running:
    # whatever the interleaving, two trials never both train a candidate (at worst neither does, and the
    # sampler may draw it again).
    first = candidate_holder(study, trial, h, S,
                             lambda t: t.user_attrs.get("training") or t.number < trial.number)
    if first is None:
        trial.set_user_attr("training", True)
        first = candidate_holder(study, trial, h, S, lambda t: t.number < trial.number)
    if first is not None:
        trial.set_user_attr("duplicate_of", first.number)
        if first.state == S.COMPLETE:
            counts["reused"] += 1
            study.tell(trial, first.values)
        else:  # being trained by another trial, or pruned there: not trained again
            counts["skipped_running"] += 1
            study.tell(trial, state=S.FAIL)
        return
    row_cfg = dataclasses.replace(cfg, net=net)
    hooks = TrainHooks(on_epoch=_reporter(trial, data, sc.cost is None))
    label = f"trial {trial.number} {h}"
    try:
        r = train_and_measure(row_cfg, spec, sc.seed, label=label, hooks=hooks)
    except optuna.TrialPruned:
        counts["pruned"] += 1
        trial.set_user_attr("row", {"hash": h, "yaml": spec.to_yaml(), "net": net_yaml,
                                    "pruned_after_epoch": len(trial_intermediate(study, trial))})
        study.tell(trial, state=S.PRUNED)
        log(f"trial {trial.number} {h}: pruned after epoch {len(trial_intermediate(study, trial))} "
            f"({100 * last_intermediate(study, trial):.2f}%)")
        return
    except BaseException:  # Ctrl-C or an error: the trial is failed, the study keeps the rest
        study.tell(trial, state=S.FAIL, skip_if_finished=True)  # (failed elsewhere already: the error stands)
        raise
    row = {**{k: v for k, v in r.items() if isinstance(v, (int, float, str, bool))}, "hash": h,
           "yaml": spec.to_yaml(), "net": net_yaml, "trial": trial.number}
    if f"deploy_ms_b{cfg.latency_batch}" in r:
        row["deploy_ms"] = r[f"deploy_ms_b{cfg.latency_batch}"]
    trial.set_user_attr("row", json.loads(json.dumps(row, default=str)))
    study.tell(trial, _values(sc, row))
    counts["trained"] += 1
    log(f"trial {trial.number} {h}: {100 * row['val_acc']:.2f}% on the held-out split"
        + (f", {sc.cost} {row[sc.cost]:.4g}" if sc.cost else "") + f" ({done + 1}/{sc.budget} in the study)")


def trial_intermediate(study, trial) -> dict:
    """The accuracies a trial reported so far, by epoch (read back from the storage)."""
    return next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number).intermediate_values


def last_intermediate(study, trial) -> float:
    values = trial_intermediate(study, trial)
    return values[max(values)] if values else float("nan")


def _reporter(trial, data: Dataset, prune: bool) -> OnEpoch | None:
    """The per-epoch hook: validation accuracy on the held-out split reported to Optuna; pruned if
    the pruner says so (single objective only: Optuna does not prune multi-objective studies)."""
    if not prune:
        return None
    optuna = _optuna()

    def on_epoch(epoch: int, model: nn.Module) -> None:
        device = next(model.parameters()).device
        acc, _ = evaluate(model, data.val_x, data.val_y, device)
        trial.report(acc, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()

    return on_epoch


def finished_rows(study) -> list[dict]:
    """One row per trained candidate (every process's), best first."""
    optuna = _optuna()
    rows = [t.user_attrs["row"] for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if _counted(t) and "row" in t.user_attrs]
    return sorted(rows, key=lambda r: (-r["val_acc"], r.get("deploy_ms", 0.0)))


def study_summary(study) -> dict:
    optuna = _optuna()
    S = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    owners = sorted({str(t.user_attrs.get("owner", "?")) for t in trials})
    return {"trials": len(trials), "complete": sum(t.state == S.COMPLETE and _counted(t) for t in trials),
            "pruned": sum(t.state == S.PRUNED for t in trials), "failed": sum(t.state == S.FAIL for t in trials),
            "duplicates": sum("duplicate_of" in t.user_attrs for t in trials),
            "invalid": sum("invalid" in t.user_attrs for t in trials), "processes": owners}


__all__ = ["COSTS", "PRUNERS", "SAMPLERS", "SearchConfig", "candidate_hash", "candidate_holder",
           "finished_rows", "grid_candidates", "open_study", "progress_counts", "run_study", "storage_url",
           "study_summary", "suggest"]
