"""Key renames for the research repos' checkpoint formats, which share one shape: a sequence of
blocks, each with named branch sub-modules, plus a classifier head. A format (in its upstream's
file of :mod:`reparam_zoo.interop.upstream`) is a table of renames given to :func:`adapt_blocks`."""

from __future__ import annotations

import re

from torch import nn

from reparam_zoo.engine.block import RepBlock
from reparam_zoo.interop.checkpoints import CheckpointError, Mapped

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


def natural_key(path: str) -> tuple:
    """Sort key of a module path with its numeric parts compared as numbers (``stage3.10`` after ``stage3.2``)."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", path) if p)


def _group(prefix: str) -> str:
    """A block's name without its indices: ``stage1.0`` -> ``stage``, ``stages.2.1`` -> ``stages``."""
    return re.sub(r"[\d.]", "", prefix)


def order_blocks(prefixes: list[str], fmt: str, order: tuple[str, ...] = ()) -> list[str]:
    """The checkpoint's block prefixes in network order, from their names alone — never from the
    order of the keys (sorted or shuffled checkpoints load the same).

    Blocks of one name (``stage1.0`` ... ``stage4.0``) are ordered by their indices as numbers;
    blocks of several names need the format's ``order`` of those names (``stem`` before
    ``stages``); any other mix is refused (its order cannot be known from the names).
    """
    groups: dict[str, list[str]] = {}
    for p in prefixes:
        groups.setdefault(_group(p), []).append(p)
    if len(groups) > 1:
        unknown = [g for g in groups if g not in order]
        if unknown:
            examples = ", ".join(groups[g][0] for g in groups)
            raise CheckpointError(
                f"the {fmt} checkpoint's blocks have {len(groups)} different names ({examples}); their order "
                "in the network cannot be known from the names, so no block is loaded (rename the keys so "
                "that one name with numeric indices, e.g. stage1.0, stage1.1, ..., orders the blocks)")
        names = sorted(groups, key=order.index)
    else:
        names = list(groups)
    return [p for g in names for p in sorted(groups[g], key=natural_key)]


def branch_renames(conv_list: str, scale: str, skip: str):
    """Renames for a MobileOne-style block, computed per target block from its branches (``train``
    of :func:`adapt_blocks` as a function): the k kxk branches from ``<conv_list><i>.conv/bn``, the
    1x1 "scale" branch from ``<scale>conv/bn``, the identity BN from ``<skip>`` — wherever the
    block has them (stems with one branch, pointwise blocks without a scale, skips only where
    in == out and stride 1)."""

    def rules(block: RepBlock) -> dict[str, str]:
        table: dict[str, str] = {}
        k = 0
        for i, info in enumerate(block.branch_info):
            kind = info.spec.type
            if kind == "kxk":
                table.update(conv_bn(f"{conv_list}{k}.conv.", f"{conv_list}{k}.bn.", i))
                k += 1
            elif kind == "conv":
                table.update(conv_bn(f"{scale}conv.", f"{scale}bn.", i))
            elif kind == "identity":
                table[skip] = f"branches.{i}.1."
        return table

    rules.detect = (conv_list, scale, skip)  # sub-key prefixes that mark a block in the checkpoint
    return rules


def adapt_blocks(state: dict, model: nn.Module, fmt: str, train, deploy: dict[str, str],
                 fixed: dict[str, object] | None = None, order: tuple[str, ...] = ()) -> dict:
    """Map ``state`` onto ``model``'s blocks in network order (:func:`order_blocks`: by the
    checkpoint's block names, indices compared as numbers; never by key order).

    ``train``: official sub-key prefix -> our sub-key prefix inside a RepBlock; ``deploy``: the
    same for a deployed checkpoint onto the folded model (``conv.`` of each folded block);
    ``fixed``: sub-keys of constant buffers (e.g. an identity tensor) with a checker that
    raises if the stored value is not the constant it stands for.
    """
    fixed = fixed or {}
    is_deployed = any(_split(k, list(deploy)) for k in state)
    rules = deploy if is_deployed else train
    detect = list(rules.detect) if callable(rules) else list(rules)
    subs = sorted([*detect, *fixed], key=len, reverse=True)
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
    prefixes = order_blocks(prefixes, fmt, order)
    if len(prefixes) != len(blocks):
        raise CheckpointError(f"the checkpoint has {len(prefixes)} {fmt} blocks, the model {len(blocks)}")
    target = dict(zip(prefixes, blocks))
    modules = dict(model.named_modules())
    own = model.state_dict()
    out, origin, unmapped = {}, {}, []
    for key, value in state.items():
        hit = _split(key, subs)
        if hit is None:
            head = next((h for h in HEADS if key.startswith(h)), None)
            if head is None:
                unmapped.append(key)
            else:
                out[HEADS[head] + key[len(head):]] = value
                origin[HEADS[head] + key[len(head):]] = key
            continue
        prefix, sub = hit
        base = target[prefix] + "." if target[prefix] else ""
        fixed_rule = next((f for f in fixed if sub.startswith(f)), None)
        if fixed_rule is not None:
            fixed[fixed_rule](value, key)
            continue
        table = rules(modules[target[prefix]]) if callable(rules) else rules
        rule = next((r for r in sorted(table, key=len, reverse=True) if sub.startswith(r)), None)
        if rule is None:  # e.g. a fourth conv branch where the model's block has one
            unmapped.append(key)
            continue
        mapped = base + table[rule] + sub[len(rule):]
        if is_deployed and mapped not in own:  # a folded block without activation is a bare conv
            mapped = base + sub[len(rule):]
        out[mapped], origin[mapped] = value, key
    if unmapped:
        raise CheckpointError(f"keys the {fmt} adapter does not know", unmapped)
    heads = [h for h in HEADS if any(k.startswith(h) and _split(k, subs) is None for k in state)]
    return Mapped(out, origin, expect_key({b: p for p, b in target.items()}, modules, rules, is_deployed,
                                          heads or list(HEADS)))


def expect_key(owners: dict[str, str], modules: dict[str, nn.Module], rules, is_deployed: bool,
               heads: list[str]):
    """The renames of :func:`adapt_blocks` backwards: a model key -> the key the checkpoint would hold
    for it (or None). ``owners``: model block -> the checkpoint's block prefix; ``heads``: the
    checkpoint's head prefixes (all of :data:`HEADS` where it holds none: then each is named)."""

    def expect(key: str) -> str | None:
        block = max((b for b in owners if not b or key.startswith(b + ".")), key=len, default=None)
        if block is not None:
            rest = key[len(block) + 1:] if block else key
            prefix = owners[block] + "." if owners[block] else ""
            table = rules(modules[block]) if callable(rules) else rules
            for official, ours in sorted(table.items(), key=lambda r: len(r[1]), reverse=True):
                if rest.startswith(ours):
                    return prefix + official + rest[len(ours):]
            if is_deployed and len(table) == 1:  # a folded block without activation is a bare conv
                return prefix + next(iter(table)) + rest
        ours = next((h for h in dict.fromkeys(HEADS.values()) if key.startswith(h)), None)
        if ours is None:
            return None
        return " or ".join(h + key[len(ours):] for h in heads if HEADS[h] == ours) or None

    return expect
