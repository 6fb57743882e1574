"""reparam_zoo: structural re-parameterization of CNN blocks, declared in YAML, folded exactly."""

from . import branches as _branches  # noqa: F401  (registers the built-in branch types)
from . import primitives as _primitives  # noqa: F401  (registers the parameterised convs)
from .adopt import AdoptReport, adopt
from .block import RepBlock, build_block
from .checkpoints import CheckpointError, load_checkpoint
from .errors import NotApplicable, SpecError
from .expand import ExpandReport, expand
from .fold import FoldReport, fold_model
from .nets import NetSpec, build_model, list_nets, load_net
from .spec import (
    BRANCHES,
    BlockSpec,
    BranchSpec,
    NormSpec,
    block_model,
    get_spec,
    json_schema,
    list_specs,
    load_spec,
    register_branch,
)
from .verify import VerifyResult, randomize_norms, verify

__version__ = "0.1.0"

__all__ = [
    "AdoptReport",
    "BRANCHES",
    "BlockSpec",
    "ExpandReport",
    "BranchSpec",
    "CheckpointError",
    "FoldReport",
    "NormSpec",
    "NotApplicable",
    "RepBlock",
    "SpecError",
    "VerifyResult",
    "NetSpec",
    "adopt",
    "block_model",
    "build_model",
    "list_nets",
    "load_net",
    "build_block",
    "expand",
    "fold_model",
    "get_spec",
    "json_schema",
    "list_specs",
    "load_checkpoint",
    "load_spec",
    "randomize_norms",
    "register_branch",
    "verify",
]
