"""Search spaces over block specs: YAML templates with ``{choice: [...]}`` points.

Any value in a block template may be ``{choice: [a, b, ...]}``; a list item that resolves to
``null`` is dropped (so ``- {choice: [null, {type: conv, kernel: 1}]}`` makes a branch
optional in the search). Every candidate is a concrete :class:`BlockSpec`, validated — and
built for the space's reference geometry — before it is returned; invalid combinations are
filtered, never returned.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from reparam_zoo.engine.block import build_block
from reparam_zoo.engine.cost import saved_tensor_mb, train_deploy_costs
from reparam_zoo.engine.fold import fold_model
from reparam_zoo.errors import SpecError
from reparam_zoo.spec.limits import LIMITS
from reparam_zoo.spec.lookup import shipped_path, spec_from_data
from reparam_zoo.spec.reader import parse_yaml, read_text
from reparam_zoo.spec.schema import BlockSpec

CHOICE = "choice"


def is_choice(node: Any) -> bool:
    """Whether a template node is a choice point (a mapping with the single key ``choice``)."""
    return isinstance(node, Mapping) and set(node) == {CHOICE}


def _check(node: Any, loc: str, source: str | None) -> None:
    if isinstance(node, Mapping):
        if CHOICE in node:
            if set(node) != {CHOICE}:
                raise SpecError("a choice point is a mapping with the single key 'choice'", loc, source)
            opts = node[CHOICE]
            if not isinstance(opts, list) or not opts:
                raise SpecError("'choice' needs a non-empty list of options", f"{loc}.choice".lstrip("."), source)
            for i, o in enumerate(opts):
                _check(o, f"{loc}.choice.{i}".lstrip("."), source)
            return
        for k, v in node.items():
            _check(v, f"{loc}.{k}".lstrip("."), source)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _check(v, f"{loc}.{i}".lstrip("."), source)


def _count(node: Any) -> int:
    if is_choice(node):
        return sum(_count(o) for o in node[CHOICE])
    if isinstance(node, Mapping):
        n = 1
        for v in node.values():
            n *= _count(v)
        return n
    if isinstance(node, list):
        n = 1
        for v in node:
            n *= _count(v)
        return n
    return 1


def expand_choices(node: Any) -> Iterator[Any]:
    """Every concrete value of a template node (choices resolved, nulls dropped from lists)."""
    if is_choice(node):
        for option in node[CHOICE]:
            yield from expand_choices(option)
    elif isinstance(node, Mapping):
        keys = list(node)
        for values in itertools.product(*(list(expand_choices(node[k])) for k in keys)):
            yield dict(zip(keys, values))
    elif isinstance(node, list):
        for values in itertools.product(*(list(expand_choices(v)) for v in node)):
            yield [v for v in values if v is not None]
    else:
        yield node


def _sample(node: Any, rng: random.Random) -> Any:
    if is_choice(node):
        return _sample(rng.choice(node[CHOICE]), rng)
    if isinstance(node, Mapping):
        return {k: _sample(v, rng) for k, v in node.items()}
    if isinstance(node, list):
        return [v for v in (_sample(x, rng) for x in node) if v is not None]
    return node


def spec_hash(spec: BlockSpec) -> str:
    """A stable 12-hex-digit hash of what a spec says (defaults omitted, keys sorted)."""
    data = {k: v for k, v in spec.to_dict().items() if k not in ("name", "description")}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Geometry:
    in_channels: int = 64
    out_channels: int = 64
    stride: int = 1
    groups: int = 1


def _geometry(data, source: str | None) -> Geometry:
    """A space's reference geometry: whole numbers in range (a one-line SpecError otherwise)."""
    if data is None:
        return Geometry()
    if not isinstance(data, Mapping):
        raise SpecError("the geometry must be a mapping (in_channels, out_channels, stride, groups)", "geometry", source)
    fields = {"in_channels": LIMITS["channels"], "out_channels": LIMITS["channels"], "stride": LIMITS["net_stride"],
              "groups": LIMITS["channels"]}
    for key, value in data.items():
        if key not in fields:
            raise SpecError(f"unknown key {str(key)[:60]!r}; a geometry has {', '.join(fields)}", "geometry", source)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= fields[key]:
            raise SpecError(f"Expected an int from 1 to {fields[key]:,} but got {str(value)[:60]}", f"geometry.{key}",
                            source)
    return Geometry(**data)


class SearchSpace:
    """A block template with choice points, the reference geometry candidates must build for, and
    optionally a network template (stage widths, depths, blocks may be choices too)."""

    def __init__(self, name: str, block: Mapping, geometry: Geometry = Geometry(), source: str | None = None,
                 net: Mapping | None = None):
        _check(block, "block", source)
        if net is not None:
            _check(net, "net", source)
        self.name, self.template, self.geometry, self.source = name, copy.deepcopy(dict(block)), geometry, source
        self.net_template = copy.deepcopy(dict(net)) if net is not None else None

    @classmethod
    def load(cls, path: str | Path) -> "SearchSpace":
        path = Path(path)
        if not path.is_file():
            if path.suffix or len(path.parts) > 1:
                raise SpecError("no such search space file", "", str(path))
            path = shipped_path("spaces", str(path))
        data = parse_yaml(read_text(path), str(path))
        if not isinstance(data, Mapping) or not isinstance(data.get("block"), Mapping):
            raise SpecError("a search space is a mapping with a 'block' template", "block", str(path))
        unknown = set(data) - {"name", "description", "block", "geometry", "net"}
        if unknown:
            raise SpecError(f"unknown key(s) {sorted(unknown)}; a space has name, description, block, geometry, net",
                            "", str(path))
        if data.get("net") is not None and not isinstance(data["net"], Mapping):
            raise SpecError("the net template must be a mapping (a net spec with choice points)", "net", str(path))
        geometry = _geometry(data.get("geometry"), str(path))
        return cls(str(data.get("name", path.stem)), data["block"], geometry, str(path), data.get("net"))

    def size(self) -> int:
        """Number of template resolutions (before validation filters invalid ones), nets included."""
        return _count(self.template) * (_count(self.net_template) if self.net_template is not None else 1)

    def sample_net(self, rng: random.Random | int, tries: int = 1000):
        """One valid net spec from the net template (``None`` when the space has none)."""
        from reparam_zoo.engine.nets import load_net

        if self.net_template is None:
            return None
        rng = random.Random(rng) if isinstance(rng, int) else rng
        for _ in range(tries):
            try:
                return load_net(_sample(self.net_template, rng))
            except SpecError:
                continue
        raise SpecError(f"no valid net in {tries} draws from the space {self.name!r}", "net", self.source)

    def candidate(self, data: Mapping) -> BlockSpec | None:
        """The block spec of one resolved template (``data``: no choice points left), validated and built
        at the space's geometry; ``None`` when it is invalid there."""
        try:
            spec = spec_from_data({**data, "name": data.get("name", self.name)})
            g = self.geometry
            build_block(spec, g.in_channels, g.out_channels, stride=g.stride, groups=g.groups)
        except SpecError:
            return None
        return spec

    def enumerate(self, limit: int = 100_000) -> list[BlockSpec]:
        """Every valid candidate (refuses spaces larger than ``limit``)."""
        if self.size() > limit:
            raise SpecError(f"the space has {self.size():,} resolutions, more than limit={limit:,}; sample it")
        out, seen = [], set()
        for data in expand_choices(self.template):
            spec = self.candidate(data)
            if spec is not None and spec_hash(spec) not in seen:
                seen.add(spec_hash(spec))
                out.append(spec)
        return out

    def sample(self, rng: random.Random | int, tries: int = 1000) -> BlockSpec:
        """One valid candidate, drawn uniformly over choice points (reproducible per seed)."""
        rng = random.Random(rng) if isinstance(rng, int) else rng
        for _ in range(tries):
            spec = self.candidate(_sample(self.template, rng))
            if spec is not None:
                return spec
        raise SpecError(f"no valid candidate in {tries} draws from the space {self.name!r}", "block", self.source)


_LATENCY_CACHE: dict[tuple, float] = {}


def candidate_cost(spec: BlockSpec, geometry: Geometry = Geometry(), size: int = 56, latency: bool = True) -> dict:
    """Train/deploy parameters and MACs, the activation memory one training step saves for
    backward (batch 1), and the deployed block's latency on this device (cached by geometry:
    every candidate with the same kernel deploys to the same conv)."""
    g = geometry
    block = build_block(spec, g.in_channels, g.out_channels, stride=g.stride, groups=g.groups)
    folded = fold_model(block)
    shape = (1, g.in_channels, size, size)
    block.train()
    saved_mb = saved_tensor_mb(lambda: block(torch.randn(shape)).sum().backward())
    out = {"hash": spec_hash(spec), **train_deploy_costs(block, folded, shape), "train_act_mb": saved_mb}
    if latency:
        conv = folded if isinstance(folded, torch.nn.Conv2d) else folded.conv
        key = (conv.kernel_size, conv.stride, conv.dilation, conv.groups, g.in_channels, g.out_channels, size,
               spec.act)
        if key not in _LATENCY_CACHE:
            import time

            x = torch.randn(shape)
            with torch.no_grad():
                folded.eval()
                for _ in range(3):
                    folded(x)
                t0 = time.perf_counter()
                for _ in range(10):
                    folded(x)
            _LATENCY_CACHE[key] = (time.perf_counter() - t0) / 10 * 1e3
        out["deploy_ms"] = _LATENCY_CACHE[key]
    return out


# ----------------------------------------------------------------------------- leaderboards


def pareto_front(rows: list[dict], acc: str = "val_acc", cost: str = "deploy_ms") -> list[dict]:
    """The rows no other row beats on both accuracy (higher) and cost (lower)."""
    front = []
    for r in rows:
        dominated = any(o[acc] >= r[acc] and o[cost] <= r[cost] and (o[acc] > r[acc] or o[cost] < r[cost])
                        for o in rows)
        if not dominated:
            front.append(r)
    return sorted(front, key=lambda r: r[cost])


__all__ = ["CHOICE", "Geometry", "SearchSpace", "candidate_cost", "expand_choices", "is_choice", "pareto_front",
           "spec_hash"]
