"""The spec room: the YAML language of blocks, read and validated before anything is built.

``schema`` (the pydantic models), ``registry`` (branch types, ``seq`` step types, the block model
over every registered type), ``activations``, ``reader`` (the hardened YAML reader nets and spaces
use too), ``translate`` (pydantic errors as one located SpecError), ``lookup`` (shipped specs by
name, files, text), ``limits``. It imports nothing from the engine (docs/architecture.md).
"""

from reparam_zoo.spec.activations import ACTIVATIONS
from reparam_zoo.spec.lookup import (
           get_spec,
           list_specs,
           load_spec,
           resolve_spec,
           shipped,
           shipped_path,
           spec_from_data,
           specs_root,
)
from reparam_zoo.spec.reader import parse_yaml, read_text
from reparam_zoo.spec.registry import BRANCHES, SEQ_STEPS, BranchType, block_model, json_schema, register_branch
from reparam_zoo.spec.schema import BlockSpec, BranchSpec, Dilation, KernelSize, Norm, NormSpec, Padding, linear_pooling
from reparam_zoo.spec.translate import translate

__all__ = ["ACTIVATIONS", "BRANCHES", "SEQ_STEPS", "BlockSpec", "BranchSpec", "BranchType", "Dilation", "KernelSize",
           "Norm", "NormSpec", "Padding", "block_model", "get_spec", "json_schema", "linear_pooling", "list_specs",
           "load_spec", "parse_yaml", "read_text", "register_branch", "resolve_spec", "shipped", "shipped_path",
           "spec_from_data", "specs_root", "translate"]
