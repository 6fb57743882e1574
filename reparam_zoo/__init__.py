"""reparam_zoo: structural re-parameterization of CNN blocks, declared in YAML, folded exactly."""

from reparam_zoo.engine import branches as _branches  # noqa: F401  (registers the built-in branch types)
from reparam_zoo.engine import primitives as _primitives  # noqa: F401  (registers the parameterised convs)
from reparam_zoo.engine.block import RepBlock, build_block
from reparam_zoo.engine.fold import FoldReport, fold_model
from reparam_zoo.engine.nets import NetSpec, build_model, list_nets, load_net
from reparam_zoo.engine.repopt import RepOptSGD, repopt
from reparam_zoo.engine.verify import VerifyResult, randomize_norms, verify
from reparam_zoo.errors import NotApplicable, SpecError
from reparam_zoo.interop.adopt import AdoptReport, adopt
from reparam_zoo.interop.checkpoints import CheckpointError, load_checkpoint
from reparam_zoo.interop.expand import ExpandReport, expand
from reparam_zoo.search import SearchSpace
from reparam_zoo.spec.lookup import get_spec, list_specs, load_spec
from reparam_zoo.spec.registry import BRANCHES, block_model, json_schema, register_branch
from reparam_zoo.spec.schema import BlockSpec, BranchSpec, NormSpec

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
    "RepOptSGD",
    "SearchSpace",
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
    "repopt",
    "verify",
]
