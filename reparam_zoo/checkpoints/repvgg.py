"""The official RepVGG checkpoints (github.com/DingXiaoH/RepVGG): ``stage0``, ``stage1.0`` ...
blocks with ``rbr_dense.conv/bn``, ``rbr_1x1.conv/bn``, ``rbr_identity`` (a BN), head ``linear``.
Deployed checkpoints (``rbr_reparam``) map onto a folded model."""

from __future__ import annotations

import re

from torch import nn

from ..block import RepBlock
from . import CheckpointError, register_format

BLOCK = re.compile(r"^(stage(\d+)(?:\.(\d+))?)\.(.+)$")
TRAIN = {"rbr_dense.conv.": "branches.0.0.", "rbr_dense.bn.": "branches.0.1.",
         "rbr_1x1.conv.": "branches.1.0.", "rbr_1x1.bn.": "branches.1.1.", "rbr_identity.": "branches.2.1."}


def _blocks_in_order(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, RepBlock)] or [
        (n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


@register_format("repvgg")
def adapt(state: dict, model: nn.Module) -> dict:
    deployed = any(".rbr_reparam." in k for k in state)
    official = sorted({m.group(1): (int(m.group(2)), int(m.group(3) or 0))
                       for k in state if (m := BLOCK.match(k))}.items(), key=lambda kv: kv[1])
    if deployed:
        ours = [n.rsplit(".conv", 1)[0] if n.endswith(".conv") else n
                for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
        if any(isinstance(m, RepBlock) for m in model.modules()):
            raise CheckpointError("this RepVGG checkpoint holds deployed weights (rbr_reparam): load it into "
                                  "the folded model, rz.fold_model(model)")
    else:
        ours = [n for n, _ in _blocks_in_order(model)]
    if len(official) != len(ours):
        raise CheckpointError(f"the checkpoint has {len(official)} RepVGG blocks, the model {len(ours)}")
    prefix = {off: our for (off, _), our in zip(official, ours)}
    out, unmapped = {}, []
    for key, value in state.items():
        m = BLOCK.match(key)
        if m is None:
            if key.startswith("linear."):
                out["head." + key[len("linear."):]] = value
            else:
                unmapped.append(key)
            continue
        block, rest = m.group(1), m.group(4)
        if deployed:
            if rest.startswith("rbr_reparam."):
                leaf = rest[len("rbr_reparam."):]
                target = prefix[block]
                conv_key = f"{target}.conv.{leaf}" if f"{target}.conv.{leaf}" in model.state_dict() else f"{target}.{leaf}"
                out[conv_key] = value
                continue
        else:
            for src, dst in TRAIN.items():
                if rest.startswith(src):
                    out[f"{prefix[block]}.{dst}{rest[len(src):]}"] = value
                    break
            else:
                unmapped.append(key)
            continue
        unmapped.append(key)
    if unmapped:
        raise CheckpointError("keys the RepVGG adapter does not know", unmapped)
    return out
