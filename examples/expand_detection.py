"""Expand detectors: ultralytics YOLO (v8n, 11n) and torchvision's Faster R-CNN backbone with frozen norms.

    python examples/expand_detection.py [--spec acb] [--models yolov8n yolo11n fasterrcnn]

For each model (random weights with randomised norm statistics, built from its yaml / torchvision, nothing
downloaded): ``rz.expand`` with ``init="preserve"``, the report, expanded == original in eval and train mode
(float64), three SGD steps, ``fold_model(layout="original")`` loaded strictly into a freshly built model of
the original classes, and for YOLO ultralytics' own ``fuse()`` on the fold. Needs ultralytics and
torchvision; about a minute on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile

import torch
from torch import nn

import reparam_zoo as rz
from reparam_zoo.engine.verify import relative_error

MODELS = ("yolov8n", "yolo11n", "fasterrcnn")


def flat(out) -> torch.Tensor:
    """Every tensor of a detector's output (nested tuples, lists, dicts), flattened into one."""
    if isinstance(out, torch.Tensor):
        return out.flatten()
    values = out.values() if isinstance(out, dict) else out
    return torch.cat([flat(v) for v in values if isinstance(v, (torch.Tensor, tuple, list, dict))])


def run(model, x, train=False) -> torch.Tensor:
    with torch.no_grad():
        return flat(copy.deepcopy(model).train(train)(x))


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "fasterrcnn":  # the backbone torchvision fine-tunes detectors with: FrozenBatchNorm2d
        from torchvision.models.detection.backbone_utils import mobilenet_backbone
        from torchvision.ops import FrozenBatchNorm2d

        return mobilenet_backbone(backbone_name="mobilenet_v3_large", weights=None, fpn=True, trainable_layers=6,
                                  norm_layer=FrozenBatchNorm2d)
    os.environ["YOLO_OFFLINE"] = "1"  # never download; settings in a temporary folder, not the home folder
    os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="yolo-config-"))
    from ultralytics import YOLO

    return YOLO(f"{name}.yaml").model


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--spec", default="acb", help="block spec every conv+norm unit becomes")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS), help="models to expand")
    args = parser.parse_args(argv)
    results = {}
    for name in args.models:
        model = rz.randomize_norms(build(name), seed=1).double().eval()
        units = [p for p, m in model.named_modules() if isinstance(m, nn.Conv2d) and max(m.kernel_size) >= 3]
        expanded, report = rz.expand(model, args.spec)
        print(f"== {name} ({args.spec}) ==\n" + "\n".join(str(report).splitlines()[:1 if report.traced else 2]))
        print(f"  {len(report.untraced)} subtrees did not trace (the model as a whole: "
              f"{report.untraced.get('', 'traced')})")
        done = {p for p, _, _ in report.expanded}
        print(f"kxk (k >= 3) convs expanded: {len(done & set(units))} of {len(units)}")
        x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
        errors = [relative_error(run(expanded, x, t), run(model, x, t)) for t in (False, True)]
        print(f"expanded == original (float64): eval {errors[0]:.1e}, train {errors[1]:.1e}")
        tuned = expanded.float().train()
        opt = torch.optim.SGD(tuned.parameters(), lr=0.01, momentum=0.9)
        for _ in range(3):
            loss = flat(tuned(torch.randn(2, 3, 64, 64))).tanh().square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        folded = rz.fold_model(tuned.eval(), layout="original")
        fresh = build(name).eval()
        print(fresh.load_state_dict(folded.state_dict(), strict=True))
        xf = torch.randn(1, 3, 64, 64)
        fold_error = relative_error(run(fresh, xf), run(tuned, xf))
        print(f"fresh {name} with the fold == fine-tuned expanded (float32): {fold_error:.1e}")
        results[name] = {"expanded": len(done & set(units)), "units": len(units), "eval": errors[0],
                         "train": errors[1], "fold": fold_error}
        if hasattr(fresh, "fuse"):
            fused = copy.deepcopy(fresh).fuse(verbose=False)
            results[name]["fused"] = relative_error(run(fused, xf), run(tuned, xf))
            print(f"ultralytics fuse() of the fold == fine-tuned expanded (float32): {results[name]['fused']:.1e}")
    return results


if __name__ == "__main__":
    main()
