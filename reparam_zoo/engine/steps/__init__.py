"""Linear steps: the primitives every branch is a chain of, one file per step kind.

A branch type only *plans* a list of steps; each step kind is a frozen dataclass with its
training module and its converter beside it: ``conv`` (:class:`ConvStep`), ``norm``
(:class:`NormStep`: eval-mode BatchNorm or a learnable scale), ``gate`` (:class:`GateStep`),
``avgpool`` (:class:`AvgStep`), ``identity`` (:class:`IdentityStep`), ``group`` (:class:`GroupStep`:
member chains times constant factors, summed). ``base`` says what a step
is and holds the registries; ``chain`` is the branch's training module and its composition to
one kernel. The block's geometry checks live in ``reparam_zoo.engine.geometry``.
"""

from reparam_zoo.engine.geometry import BlockGeometry, Placement, analyze, finalize
from reparam_zoo.engine.steps.avg import AvgPool, AvgStep
from reparam_zoo.engine.steps.base import (
    STEP_CONVERTERS,
    STEP_KINDS,
    ChannelWise,
    Step,
    StepKernel,
    register_step,
    register_step_converter,
    step_kernel,
)
from reparam_zoo.engine.steps.chain import (
    BranchKernel,
    Chain,
    ComposedChain,
    chain_converter,
    chain_kernel,
    chain_module,
)
from reparam_zoo.engine.steps.conv import (
    CONV_PARAMS,
    CONV_TRANSPOSES,
    CONVS,
    PLAIN,
    ConvStep,
    conv_step_kernel,
    register_conv_param,
)
from reparam_zoo.engine.steps.gate import BranchGate, GateStep
from reparam_zoo.engine.steps.group import GroupMember, GroupStep, GroupSum
from reparam_zoo.engine.steps.identity import IdentityStep
from reparam_zoo.engine.steps.norm import BN_CLASSES, ChannelScale, NormStep, RunningStats, norm_steps

__all__ = ["AvgPool", "AvgStep", "BN_CLASSES", "RunningStats", "BlockGeometry", "BranchGate", "BranchKernel",
           "CONVS", "CONV_PARAMS",
           "CONV_TRANSPOSES", "Chain", "ChannelScale",
           "ChannelWise", "ComposedChain", "ConvStep", "GateStep", "GroupMember", "GroupStep", "GroupSum",
           "IdentityStep", "NormStep", "PLAIN", "Placement",
           "STEP_CONVERTERS", "STEP_KINDS", "Step", "StepKernel", "analyze", "chain_converter", "chain_kernel",
           "chain_module", "conv_step_kernel", "finalize", "norm_steps", "register_conv_param", "register_step",
           "register_step_converter", "step_kernel"]
