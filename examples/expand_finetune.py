"""Expand a trained torchvision ResNet-18 with re-parameterized blocks, fine-tune, fold it back.

    python examples/expand_finetune.py [--spec acb] [--epochs 4] [--finetune-epochs 4]

1. trains a plain torchvision ``resnet18`` (random init, 10 classes) on real data: the embedded
   handwritten digits (scikit-learn's 1,797 8x8 images, upsampled to --size, 3 channels; 80/20 split);
2. ``rz.expand(model, spec)`` with ``init="preserve"``: checks the expanded net predicts exactly
   what the trained net predicts (same validation accuracy, max logit difference);
3. fine-tunes the expanded net for --finetune-epochs, and, as the control, the plain net for the
   same epochs with the same data order;
4. ``rz.fold_model(expanded, layout="original")`` and ``load_state_dict(strict=True)`` into a FRESH
   torchvision ``resnet18``: checks the original class reproduces the expanded net's predictions.

Prints a table and writes ``--out`` (JSON). Needs torchvision; CPU is fine (about 2 minutes on 2 cores
with the defaults). No download.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import reparam_zoo as rz
from reparam_zoo.bench.data import load_digits


def evaluate(model, x, y, batch=256):
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])
    return logits, (logits.argmax(1) == y).float().mean().item() * 100


def train(model, data, epochs, lr, seed, label):
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    steps = epochs * ((len(data.train_x) + 63) // 64)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(data.train_x), generator=gen)
        t0, total = time.perf_counter(), 0.0
        for i in range(0, len(order), 64):
            idx = order[i:i + 64]
            loss = F.cross_entropy(model(data.train_x[idx]), data.train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        _, acc = evaluate(model, data.val_x, data.val_y)
        print(f"  {label} epoch {epoch + 1}/{epochs}: loss {total / len(order):.4f}, "
              f"val {acc:.2f} % ({time.perf_counter() - t0:.1f} s)", flush=True)
    return model


def new_branch_share(model) -> float:
    """Median over expanded layers of |K - K_carrier| / |K|: how much the new branches changed each kernel."""
    from reparam_zoo.engine.steps import chain_kernel

    shares = []
    with torch.no_grad():
        for block in model.modules():
            if isinstance(block, rz.RepBlock):
                weight, _ = block.equivalent_kernel()
                carrier = chain_kernel(list(block.branches[0]), block.geometry.in_channels).weight.to(weight)
                shares.append(((weight - carrier).norm() / weight.norm()).item())
    return float(torch.tensor(shares).median())


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--spec", default="acb", help="block spec to expand the 3x3 convs with")
    ap.add_argument("--epochs", type=int, default=4, help="epochs of the plain net before expanding")
    ap.add_argument("--finetune-epochs", type=int, default=4, help="fine-tuning epochs (expanded and control)")
    ap.add_argument("--size", type=int, default=32, help="input size the 8x8 digits are upsampled to")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/expand_finetune.json"))
    args = ap.parse_args(argv)
    import torchvision

    torch.manual_seed(args.seed)
    d = load_digits(args.size)
    d.train_x, d.val_x = d.train_x.expand(-1, 3, -1, -1).contiguous(), d.val_x.expand(-1, 3, -1, -1).contiguous()
    print(f"data: {d.name}, {len(d.train_x)} train / {len(d.val_x)} validation images, {args.size}x{args.size}")
    plain = torchvision.models.resnet18(weights=None, num_classes=10)
    train(plain, d, args.epochs, 0.05, args.seed, "plain resnet18")
    logits_plain, acc_plain = evaluate(plain, d.val_x, d.val_y)

    expanded, report = rz.expand(plain, args.spec)
    print(report)
    logits_exp, acc_exp = evaluate(expanded, d.val_x, d.val_y)
    start_diff = (logits_exp - logits_plain).abs().max().item()
    start_same = bool((logits_exp.argmax(1) == logits_plain.argmax(1)).all())
    print(f"expanded with {args.spec}: val {acc_exp:.2f} % (trained plain: {acc_plain:.2f} %), "
          f"max logit difference {start_diff:.2e}, same predictions: {start_same}")

    control = copy.deepcopy(plain)
    train(expanded, d, args.finetune_epochs, 0.01, args.seed + 1, f"{args.spec}-expanded")
    train(control, d, args.finetune_epochs, 0.01, args.seed + 1, "plain control")
    logits_tuned, acc_tuned = evaluate(expanded, d.val_x, d.val_y)
    _, acc_control = evaluate(control, d.val_x, d.val_y)

    share = new_branch_share(expanded)
    print(f"the new branches' share of the folded kernels after fine-tuning: {share:.2%} (median over layers)")

    folded = rz.fold_model(expanded, layout="original")
    fresh = torchvision.models.resnet18(weights=None, num_classes=10)
    fresh.load_state_dict(folded.state_dict(), strict=True)
    logits_fresh, acc_fresh = evaluate(fresh, d.val_x, d.val_y)
    end_diff = (logits_fresh - logits_tuned).abs().max().item()
    end_rel = end_diff / logits_tuned.abs().max().item()
    end_same = bool((logits_fresh.argmax(1) == logits_tuned.argmax(1)).all())
    params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    result = {
        "data": d.name, "train_images": len(d.train_x), "val_images": len(d.val_x), "spec": args.spec,
        "epochs": args.epochs, "finetune_epochs": args.finetune_epochs, "seed": args.seed,
        "expanded_layers": len(report.expanded), "left_layers": len(report.left),
        "acc_plain": acc_plain, "acc_expanded_start": acc_exp, "start_max_logit_diff": start_diff,
        "start_same_predictions": start_same, "acc_expanded_finetuned": acc_tuned,
        "acc_plain_control_finetuned": acc_control, "new_branch_share_median": share, "acc_original_class_after_fold": acc_fresh,
        "fold_max_logit_diff": end_diff, "fold_rel_logit_diff": end_rel, "fold_same_predictions": end_same,
        "params_expanded": params(expanded), "params_original": params(fresh),
    }
    print(f"\n| model | val accuracy |\n|---|---|\n| plain resnet18 ({args.epochs} epochs) | {acc_plain:.2f} % |\n"
          f"| expanded ({args.spec}), before fine-tuning | {acc_exp:.2f} % |\n"
          f"| expanded, fine-tuned {args.finetune_epochs} epochs | {acc_tuned:.2f} % |\n"
          f"| plain control, fine-tuned {args.finetune_epochs} epochs | {acc_control:.2f} % |\n"
          f"| fresh torchvision resnet18 loaded with the fold (strict) | {acc_fresh:.2f} % |")
    print(f"\nfold back: max logit difference {end_diff:.2e} (relative {end_rel:.2e}), same predictions: "
          f"{end_same}; parameters {params(expanded):,} (expanded) -> {params(fresh):,} (original)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    if not (start_same and end_same and end_rel <= 1e-5):
        raise SystemExit("the expanded or folded model does not reproduce its source's predictions")
    return result


if __name__ == "__main__":
    main()
