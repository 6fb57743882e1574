"""The spec language's extension points: branch types and ``seq`` step types (activations: ``spec/activations.py``).

Each is a :class:`~reparam_zoo.registry.Registry`. The engine registers the built-in ones when
``reparam_zoo`` is imported; users register their own the same way (docs/adding_a_branch.md).
:func:`block_model` is the :class:`BlockSpec` whose ``branches`` is the discriminated union of
every registered branch type, rebuilt when a type is added.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Optional, Union

from pydantic import BaseModel, Field, create_model
from torch import nn

from reparam_zoo.registry import Registry
from reparam_zoo.spec.limits import LIMITS
from reparam_zoo.spec.schema import BlockSpec, BranchSpec

if TYPE_CHECKING:
    from reparam_zoo.engine.geometry import BlockGeometry
    from reparam_zoo.engine.steps import BranchKernel, Step

#: ``type:`` of a ``seq`` branch's step -> its pydantic model (the ``seq`` branch registers them)
SEQ_STEPS: Registry[type[BaseModel]] = Registry("step type")


@dataclass(frozen=True)
class BranchType:
    """What a branch type registers: its spec model, training module and converter."""

    name: str
    spec: type[BranchSpec]
    #: ``module(spec, plan, block) -> nn.Module``; None: the engine's chain of the planned steps
    module: Optional[Callable[[BranchSpec, list[Step], BlockGeometry], nn.Module]] = None
    #: ``converter(module, block) -> BranchKernel``; None: the engine composes the chain's steps
    converter: Optional[Callable[[nn.Module, BlockGeometry], BranchKernel]] = None


BRANCHES: Registry[BranchType] = Registry("branch type")


def register_branch(
    name: str,
    *,
    module: Optional[Callable[[BranchSpec, list[Step], BlockGeometry], nn.Module]] = None,
    converter: Optional[Callable[[nn.Module, BlockGeometry], BranchKernel]] = None,
) -> Callable[[type[BranchSpec]], type[BranchSpec]]:
    """Register a branch type under its YAML name (decorates the spec model).

    ``module(spec, plan, block)`` builds the training module (default: a
    :class:`~reparam_zoo.engine.steps.Chain` of the planned steps) and
    ``converter(module, block)`` turns it into a kernel (default: compose the chain).
    Registering a name twice raises ``ValueError``.
    """

    def wrap(cls: type[BranchSpec]) -> type[BranchSpec]:
        if not (isinstance(cls, type) and issubclass(cls, BranchSpec)):
            raise TypeError(f"Expected a BranchSpec subclass but got {cls!r}")
        field = cls.model_fields.get("type")
        if field is None or field.default != name:
            raise TypeError(
                f"{cls.__name__} must declare `type: Literal[{name!r}] = {name!r}` to register as {name!r}")
        BRANCHES.register(name, BranchType(name, cls, module, converter))
        return cls

    return wrap


_MODEL_CACHE: dict[int, type[BlockSpec]] = {}


def block_model() -> type[BlockSpec]:
    """The :class:`BlockSpec` subclass whose ``branches`` is the union of registered types."""
    if not len(BRANCHES):
        raise RuntimeError("no branch type is registered: import reparam_zoo (its engine registers the "
                           "built-in types) before reading block specs")
    cached = _MODEL_CACHE.get(BRANCHES.version)
    if cached is not None:
        return cached
    models = tuple(t.spec for _, t in BRANCHES.items())
    item = Annotated[Union[models], Field(discriminator="type")] if len(models) > 1 else models[0]
    model = create_model("BlockSpec", __base__=BlockSpec,
                         branches=(list[item], Field(min_length=1, max_length=LIMITS["branches"],
                                                     description="the parallel branches")))
    model.__reduce__ = _reduce_spec  # the class is made here, so pickle rebuilds through block_model()
    _MODEL_CACHE.clear()
    _MODEL_CACHE[BRANCHES.version] = model
    return model


def _reduce_spec(spec: BlockSpec):
    """Pickle a spec by value: its fields (branches as instances of their registered, importable models,
    so unpickling imports the modules that register them) and its source, rebuilt with the
    :func:`block_model` of the process that loads it — ``torch.save``, ``copy.deepcopy`` and ``spawn``
    workers all go through here."""
    return rebuild_spec, ({k: getattr(spec, k) for k in type(spec).model_fields}, spec.source)


def rebuild_spec(fields: dict[str, Any], source: str | None) -> BlockSpec:
    """The inverse of pickling a spec (see ``_reduce_spec``): validated again, with its source."""
    spec = block_model().model_validate(fields)
    spec._source = source
    return spec


def json_schema() -> dict[str, Any]:
    """JSON Schema of a block spec (for editor completion of the YAML files)."""
    schema = block_model().model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "reparam_zoo block spec"
    return schema
