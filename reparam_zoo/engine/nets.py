"""Network specs and networks: a stem, stages of RepBlocks, a classifier head.

A network spec (YAML in ``specs/nets/``) names a block spec for the whole net (and
optionally per stage); ``build_model(..., block=...)`` swaps the block everywhere, so
every block spec runs in the identical skeleton.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Optional, Union

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from torch import nn

from reparam_zoo.engine.block import RepBlock, deployed_block
from reparam_zoo.errors import SpecError
from reparam_zoo.spec.limits import LIMITS
from reparam_zoo.spec.lookup import resolve_spec, shipped, shipped_path, spec_from_data
from reparam_zoo.spec.reader import parse_yaml, read_text
from reparam_zoo.spec.schema import BlockSpec
from reparam_zoo.spec.translate import translate

#: whole numbers only (``2.0`` or ``true`` is refused, not read as 2 or 1), each with its limit (docs/spec.md)
Width = Annotated[int, Field(strict=True, ge=1, le=LIMITS["channels"])]
Depth = Annotated[int, Field(strict=True, ge=1, le=LIMITS["net_blocks"])]
Stride = Annotated[int, Field(strict=True, ge=1, le=LIMITS["net_stride"])]
Groups = Annotated[int, Field(strict=True, ge=1, le=LIMITS["channels"])]
InputSize = Annotated[int, Field(strict=True, ge=1, le=LIMITS["net_input_size"])]

#: a block spec by shipped name or YAML path, or written inline (a mapping, as in a block YAML file)
BlockRef = Union[str, dict[str, Any]]


class StemSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    width: Width = Field(description="output channels of the stem block")
    stride: Stride = Field(2, description="stride of the stem block")
    block: Optional[BlockRef] = Field(None, description="block spec for the stem (default: the net's block)")


class StageSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    width: Width = Field(description="output channels of every block of the stage")
    depth: Depth = Field(description="number of blocks")
    stride: Stride = Field(2, description="stride of the first block (the others have stride 1)")
    groups: Union[Groups, list[Groups]] = Field(
        1, description="groups of every block, or a list applied cyclically to the stage's blocks")
    block: Optional[BlockRef] = Field(None, description="block spec for this stage (default: the net's block)")
    pointwise: Optional[BlockRef] = Field(
        None, description="MobileOne's layout: each of the `depth` units is a depthwise block (the stage's "
                          "block, groups = channels, keeping the channels) followed by this pointwise block "
                          "(to `width`); `groups` is then unused")

    def groups_at(self, i: int) -> int:
        return self.groups if isinstance(self.groups, int) else self.groups[i % len(self.groups)]

    @field_validator("groups")
    @classmethod
    def _nonempty(cls, v):
        if isinstance(v, list) and not v:
            raise ValueError("a groups list needs at least one entry")
        return v


class HeadSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dropout: float = Field(0.0, ge=0, lt=1, strict=True, allow_inf_nan=False,
                           description="dropout before the linear classifier")


class NetSpec(BaseModel):
    """A classification network: stem block, stages of blocks, global pool + linear head."""

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    input_size: InputSize = Field(description="input height and width the net is designed for")
    block: BlockRef = Field("repvgg", description="block spec used everywhere (shipped name, path or inline)")
    stem: StemSpec
    stages: list[StageSpec] = Field(min_length=1, max_length=LIMITS["net_stages"])
    head: HeadSpec = Field(default_factory=HeadSpec)

    @model_validator(mode="after")
    def _bounded(self) -> "NetSpec":
        blocks = sum(st.depth * (2 if st.pointwise is not None else 1) for st in self.stages) + 1
        if blocks > LIMITS["net_blocks"]:
            raise ValueError(f"the net has {blocks:,} blocks; the limit is {LIMITS['net_blocks']:,} "
                             "(docs/spec.md, Limits)")
        return self

    def feature_sizes(self) -> list[int]:
        """Spatial size at the input of the stem and of every stage, and at the end."""
        size = self.input_size
        sizes = [size]
        for s in [self.stem.stride] + [st.stride for st in self.stages]:
            size = -(-size // s)
            sizes.append(size)
        return sizes


def list_nets() -> list[str]:
    """Names of the shipped net specs."""
    return shipped("nets")


def load_net(net: str | Path | Mapping | NetSpec) -> NetSpec:
    """A net spec from a spec, a mapping, a shipped name or a YAML path."""
    if isinstance(net, NetSpec):
        return net
    source = None
    if isinstance(net, Mapping):
        data = net
    else:
        path = Path(net)
        if not path.suffix and not path.exists():
            path = shipped_path("nets", str(net))
        if not path.is_file():
            raise SpecError(f"no such net spec file: {path}", "", str(path))
        source = str(path)
        data = parse_yaml(read_text(path), source)
    if not isinstance(data, Mapping):
        raise SpecError("a net spec must be a YAML mapping of keys", "", source)
    try:
        spec = NetSpec.model_validate(dict(data))
    except ValidationError as exc:
        raise translate(exc, source, (NetSpec, StemSpec, StageSpec, HeadSpec)) from None
    spec._source = source  # type: ignore[attr-defined]
    return spec


class RepNet(nn.Module):
    """stem -> stages -> global average pool -> (dropout) -> linear. Holds RepBlocks, knows no branches."""

    def __init__(self, stem: nn.Module, stages: nn.Sequential, width: int, num_classes: int, dropout: float):
        super().__init__()
        self.stem = stem
        self.stages = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.head(self.dropout(torch.flatten(self.pool(x), 1)))


def _block(ref: BlockRef, override: BlockSpec | None, loc: str, source: str | None) -> BlockSpec:
    if override is not None:
        return override
    try:
        if isinstance(ref, Mapping):
            return spec_from_data(ref, source)
        return resolve_spec(ref)
    except SpecError as exc:
        raise SpecError(exc.rule, ".".join(p for p in (loc, exc.location) if p) if isinstance(ref, Mapping)
                        else loc, source) from None


def build_model(net: str | Path | Mapping | NetSpec, num_classes: int, *, block: Any = None,
                in_channels: int = 3, mode: str = "offline", deployed: bool = False) -> RepNet:
    """The training network of ``net``; ``block`` (a block spec, name or path) replaces every block;
    ``mode="online"`` builds every block in online mode (see :func:`~reparam_zoo.build_block`).
    ``deployed=True`` builds the plain deployed network directly (what ``fold_model`` gives, with
    the same keys, so a deployed checkpoint loads strictly; no training branch ever exists)."""
    spec = load_net(net)
    source = getattr(spec, "_source", None) or "<net spec>"  # errors name the net, not the block file
    override = None if block is None else resolve_spec(block)
    stem_spec = _block(spec.stem.block or spec.block, override, "stem.block", source)
    def make(bspec, cin, cout, stride, groups):
        if deployed:
            return deployed_block(bspec, cin, cout, stride=stride, groups=groups)
        return RepBlock(bspec, cin, cout, stride=stride, groups=groups, mode=mode)

    try:
        stem = make(stem_spec, in_channels, spec.stem.width, spec.stem.stride, 1)
    except SpecError as exc:
        raise exc.located("stem", source) from None
    layers: list[nn.Module] = []
    cin = spec.stem.width
    for i, st in enumerate(spec.stages):
        bspec = _block(st.block or spec.block, override, f"stages.{i}.block", source)
        pw = None if st.pointwise is None else _block(st.pointwise, None, f"stages.{i}.pointwise", source)
        for j in range(st.depth):
            stride = st.stride if j == 0 else 1
            try:
                if pw is None:
                    layers.append(make(bspec, cin, st.width, stride, st.groups_at(j)))
                else:  # depthwise kxk keeping the channels, then pointwise to the stage's width
                    layers.append(make(bspec, cin, cin, stride, cin))
                    layers.append(make(pw, cin, st.width, 1, 1))
            except SpecError as exc:
                raise exc.located(f"stages.{i}", source) from None
            cin = st.width
    return RepNet(stem, nn.Sequential(*layers), cin, num_classes, spec.head.dropout)


def block_fits(net: NetSpec, block: BlockSpec) -> bool:
    """Whether a block suits the (2-D) net as its only kind of layer: its kernel is 2-D (an int or two
    entries), has a window (a net of 1x1 blocks, e.g. ExpandNet-FC's, sees no neighbourhood: it is not
    the conv net being compared) no wider than the net's input, and it has an activation (blocks
    without one, e.g. UniRepLKNet's dilated block, stack into a linear network)."""
    from reparam_zoo.spec.schema import axes_of

    kernel, dilation = axes_of(block.kernel), axes_of(block.dilation)
    if len(kernel) > 2 or len(dilation) > 2 or max(kernel) == 1:
        return False
    windows = [d * (k - 1) + 1 for k, d in zip(kernel * (2 // len(kernel)), dilation * (2 // len(dilation)))]
    return block.act != "identity" and max(windows) <= net.input_size
