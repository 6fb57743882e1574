"""The shared shape of the research repos' formats: a sequence of blocks, each with named
branch sub-modules, plus a classifier head. An adapter is a table of renames."""

from __future__ import annotations

from torch import nn

from ..block import RepBlock
from . import CheckpointError

HEADS = {"linear.": "head.", "head.fc.": "head.", "fc.": "head."}


def conv_bn(conv: str, bn: str, branch: int) -> dict[str, str]:
    """Renames of an official conv + BN pair onto branch ``branch`` (its steps 0 and 1)."""
    return {conv: f"branches.{branch}.0.", bn: f"branches.{branch}.1."}


def _split(key: str, subs: list[str]) -> tuple[str, str] | None:
    """(block prefix, sub-key) when ``key`` is ``<prefix>.<sub>...`` or ``<sub>...``."""
    for sub in subs:
        if key.startswith(sub):
            return "", key
        i = key.find("." + sub)
        if i >= 0:
            return key[:i], key[i + 1:]
    return None


def adapt_blocks(state: dict, model: nn.Module, fmt: str, train: dict[str, str], deploy: dict[str, str],
                 fixed: dict[str, object] | None = None) -> dict:
    """Map ``state`` onto ``model``'s blocks, in order.

    ``train``: official sub-key prefix -> our sub-key prefix inside a RepBlock; ``deploy``: the
    same for a deployed checkpoint onto the folded model (``conv.`` of each folded block);
    ``fixed``: sub-keys of constant buffers (e.g. an identity tensor) with a checker that
    raises if the stored value is not the constant it stands for.
    """
    fixed = fixed or {}
    is_deployed = any(_split(k, list(deploy)) for k in state)
    rules = deploy if is_deployed else train
    subs = sorted([*rules, *fixed], key=len, reverse=True)
    prefixes: list[str] = []
    for key in state:
        hit = _split(key, subs)
        if hit and hit[0] not in prefixes:
            prefixes.append(hit[0])
    blocks = [n for n, m in model.named_modules() if isinstance(m, RepBlock)]
    if is_deployed:
        if blocks:
            raise CheckpointError(f"this {fmt} checkpoint holds deployed weights: load it into the folded model "
                                  "(rz.fold_model(model)) or build_model(..., deployed=True)")
        blocks = [n[: -len(".conv")] if n.endswith(".conv") else n
                  for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if len(prefixes) != len(blocks):
        raise CheckpointError(f"the checkpoint has {len(prefixes)} {fmt} blocks, the model {len(blocks)}")
    target = dict(zip(prefixes, blocks))
    own = model.state_dict()
    out, unmapped = {}, []
    for key, value in state.items():
        hit = _split(key, subs)
        if hit is None:
            head = next((h for h in HEADS if key.startswith(h)), None)
            if head is None:
                unmapped.append(key)
            else:
                out[HEADS[head] + key[len(head):]] = value
            continue
        prefix, sub = hit
        base = target[prefix] + "." if target[prefix] else ""
        fixed_rule = next((f for f in fixed if sub.startswith(f)), None)
        if fixed_rule is not None:
            fixed[fixed_rule](value, key)
            continue
        rule = next(r for r in sorted(rules, key=len, reverse=True) if sub.startswith(r))
        mapped = base + rules[rule] + sub[len(rule):]
        if is_deployed and mapped not in own:  # a folded block without activation is a bare conv
            mapped = base + sub[len(rule):]
        out[mapped] = value
    if unmapped:
        raise CheckpointError(f"keys the {fmt} adapter does not know", unmapped)
    return out
