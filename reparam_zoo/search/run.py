"""The two searches behind ``reparam-zoo search``, from data to result files: an Optuna study over a
space's candidates (:func:`study_search`) or one gated supernet cut down to the branches its gates
keep (:func:`supernet_search`). Both score on a held-out split of the training images
(:func:`search_data`) and re-train what they found with seeds against the plain control on the
test set (:func:`reevaluate`, compare's paired statistics); both put their files in place while
holding the output folder (:func:`publish_held`), so that processes sharing a study write in turn.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from reparam_zoo.bench.compare import CONTROL, CompareConfig, run_compare
from reparam_zoo.bench.data import Dataset, load_data
from reparam_zoo.bench.measure import evaluate
from reparam_zoo.bench.trainer import TrainHooks, train_and_measure
from reparam_zoo.engine.fold import fold_model
from reparam_zoo.engine.nets import load_net
from reparam_zoo.errors import SpecError
from reparam_zoo.outputs import OutputError, RunLock, publish
from reparam_zoo.search import supernet as snm
from reparam_zoo.search.leaderboard import leaderboard_files
from reparam_zoo.search.space import SearchSpace
from reparam_zoo.search.study import SearchConfig, finished_rows, run_study, study_summary
from reparam_zoo.spec.lookup import load_spec
from reparam_zoo.spec.schema import BlockSpec

#: the gate penalty of each supernet scheme when none is given (measured in docs/search.md)

Log = Callable[[str], None]


def search_data(arg: str, size: int, limit: int, holdout: int) -> tuple[Dataset, Dataset]:
    """(the search's data: training images + a held-out split of the training set as validation,
    the re-evaluation's data: the same training images + the real test set)."""
    full = load_data(arg, size, limit + holdout)
    n = len(full.train_x)
    h = max(1, min(holdout, n // 5))
    k = min(limit, n - h)
    if k < 1:
        raise SpecError(f"{full.name}: {n} training image(s) cannot give both a training set and a held-out split")
    tx, ty = full.train_x[:k], full.train_y[:k]
    hx, hy = full.train_x[n - h:], full.train_y[n - h:]
    return (Dataset(full.name, tx, ty, hx, hy, full.num_classes),
            Dataset(full.name, tx, ty, full.val_x, full.val_y, full.num_classes))


def publish_held(out: Path, files: dict[str, str | bytes], remove: tuple[str, ...] = (), wait: float = 120.0) -> None:
    """Put a result set in place while holding the folder (processes sharing a study publish in turn)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            lock = RunLock(out, "reparam-zoo search (writing results)").acquire()
            break
        except OutputError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    try:
        publish(out, files, remove=remove)
    finally:
        lock.release()


def reevaluate(space: SearchSpace, cfg: CompareConfig, test_data: Dataset, rows: list[dict], seeds: int,
               log: Log) -> list[dict] | None:
    """Re-train the given candidates (and the plain control) with ``seeds`` seeds and compare on the test set;
    one compare per distinct net, in ``cfg.out/reevaluate``. None if another process is doing it right now."""
    by_net: dict[str, list[dict]] = {}
    for r in rows:
        by_net.setdefault(r["net"], []).append(r)
    summaries = []
    for i, (net_yaml, group) in enumerate(by_net.items()):
        net = load_net(yaml.safe_load(net_yaml)) if space.net_template is not None and net_yaml else cfg.net
        where = cfg.out / "reevaluate" / (f"net{i}" if len(by_net) > 1 else "")
        specs = [load_spec(r["yaml"]).model_copy(update={"name": f"{space.name}-{r['hash']}"}) for r in group]
        done = where / "results.json"
        names = [CONTROL] + [s.name for s in specs]
        if done.is_file():
            prev = json.loads(done.read_text())
            if [r["block"] for r in prev.get("summary", [])] == names and prev["config"]["seeds_done"] >= seeds:
                summaries += prev["summary"]
                continue
        rc = dataclasses.replace(cfg, net=net, data=test_data, blocks=[CONTROL, *specs], seeds=seeds,
                                 control=CONTROL, out=where, run_latency=False)
        log(f"re-evaluating {len(specs)} candidate(s) with {seeds} seeds against '{CONTROL}' on "
            f"{len(test_data.val_x):,} test images -> {where}")
        try:
            summaries += run_compare(rc)
        except OutputError as exc:
            log(f"re-evaluation skipped here: {exc}")
            return None
    return summaries


# ----------------------------------------------------------------------------- the study


@dataclass(frozen=True)
class StudyOutcome:
    """What a study search wrote (``files``, already in place) and what this process did (``counts``)."""
    files: dict[str, str | bytes]
    counts: dict[str, int]
    summary: dict
    reevaluation: list[dict] | None


def study_search(sc: SearchConfig, test_data: Dataset, reevaluate_top: int, reeval_seeds: int,
                 log: Log) -> StudyOutcome:
    """Work on the study ``sc`` (trials train with ``sc.compare``), re-evaluate its ``reevaluate_top``
    best candidates with ``reeval_seeds`` seeds on ``test_data`` (0: skip), write the leaderboard files
    into ``sc.compare.out``."""
    space, cfg = sc.space, sc.compare
    out = cfg.out
    t0 = time.perf_counter()
    try:
        study, counts = run_study(sc, log=log)
    except KeyboardInterrupt:
        log(f"interrupted: the study {sc.study!r} in {sc.storage} keeps every finished trial; the same command "
            "resumes it")
        raise
    rows = finished_rows(study)
    if not rows:
        raise SpecError("no candidate of the space was trained to the end (all invalid, pruned or failed)")
    summary = study_summary(study)
    log(f"this process: {counts['trained']} trained, {counts['pruned']} pruned, {counts['reused']} duplicates "
        f"reused, {counts['skipped_running']} left to the process training them, {counts['invalid']} invalid; "
        f"the study: {summary['complete']} candidates trained by {len(summary['processes'])} process(es) "
        f"({time.perf_counter() - t0:.0f} s here)")
    reeval = reevaluate(space, cfg, test_data, rows[:reevaluate_top], reeval_seeds, log) if reevaluate_top else None
    files = leaderboard_files(sc, rows, summary, reeval)
    publish_held(out, files, remove=("supernet.json",) + (() if space.net_template is not None else ("best_net.yaml",)))
    return StudyOutcome(files, counts, summary, reeval)


# ----------------------------------------------------------------------------- the supernet


@dataclass(frozen=True)
class SupernetSettings:
    """How a supernet search trains and cuts (the ``--supernet`` options of ``reparam-zoo search``)."""
    scheme: str = "group-lasso"
    lam: float | None = None  # the gate penalty; None: the scheme's default_lam
    top_k: int = 2  # optional branches the derived block keeps
    eliminate: bool = True  # progressive elimination down to top_k during the training
    seed: int = 0
    reevaluate: bool = True  # re-train the derived block against the plain control on the test set
    reeval_seeds: int = 3

    @property
    def penalty(self) -> float:
        """The gate penalty used: ``lam``, or the scheme's default."""
        return self.lam if self.lam is not None else snm.SCHEMES.get(self.scheme).default_lam


@dataclass(frozen=True)
class SupernetOutcome:
    """The supernet (``supernet``), the block derived from it (``derived``) and what ``supernet.json`` holds."""
    supernet: snm.Supernet
    derived: BlockSpec
    result: dict


def supernet_search(space: SearchSpace, cfg: CompareConfig, test_data: Dataset, settings: SupernetSettings,
                    log: Log) -> SupernetOutcome:
    """Train the supernet with the chosen gating scheme, derive the top-k branches, check the derived
    net (with the supernet's weights, no retraining, and folded), optionally re-evaluate it; writes
    ``supernet.json`` and ``best.yaml`` (the derived spec) into ``cfg.out``."""
    sn = snm.supernet_spec(space, settings.scheme)
    lam = settings.penalty
    if settings.top_k > len(sn.optional):
        raise SpecError(f"--top-k {settings.top_k} but the space has {len(sn.optional)} optional branches")
    cfg = dataclasses.replace(cfg, mode=sn.mode)
    hooks = TrainHooks(penalty=snm.penalty(sn, lam), after_step=snm.proximal_step(sn, lam),
                       on_epoch=snm.eliminator(sn, settings.top_k, cfg.epochs, log) if settings.eliminate else None)
    keep: dict = {}
    r = train_and_measure(cfg, sn.spec, settings.seed, label="supernet", keep=keep, hooks=hooks)
    model = keep["model"]
    table = snm.gate_table(model, sn)
    spec, ranking, pruned = snm.derive(model, sn, top_k=settings.top_k)
    device = torch.device(cfg.device)
    folded = fold_model(pruned.eval())
    acc_pruned, logits_pruned = evaluate(pruned, cfg.data.val_x, cfg.data.val_y, device)
    acc_folded, logits_folded = evaluate(folded, cfg.data.val_x, cfg.data.val_y, device)
    labels = {f"branches.{i}": sn.spec.branches[i].label() for i in sn.optional}
    result = {"space": space.name, "scheme": settings.scheme, "lam": lam, "eliminate": settings.eliminate,
              "top_k": settings.top_k, "supernet": r, "gates": {n: v for n, v in table.items()},
              "gate_labels": labels, "gate_ranking": ranking, "derived_yaml": spec.to_yaml(),
              "supernet_val_acc": r["val_acc"], "derived_val_acc_without_retraining": acc_pruned,
              "derived_folded_val_acc": acc_folded,
              "derived_max_logit_diff": (logits_pruned - logits_folded).abs().max().item()}
    if settings.reevaluate:
        row = {"yaml": spec.to_yaml(), "hash": "derived", "net": None}
        result["reevaluation"] = reevaluate(space, cfg, test_data, [row], settings.reeval_seeds, log)
    publish_held(cfg.out, {"best.yaml": spec.to_yaml(), "supernet.json": json.dumps(result, indent=2, default=str)},
                 remove=("leaderboard.json", "leaderboard.md", "pareto.png", "best_net.yaml"))
    return SupernetOutcome(sn, spec, result)


__all__ = ["StudyOutcome", "SupernetOutcome", "SupernetSettings", "publish_held", "reevaluate",
           "search_data", "study_search", "supernet_search"]
