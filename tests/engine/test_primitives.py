"""Engine primitives: parameterised convs, composed-kernel training, `when`."""

import pytest
import torch
import torch.nn.functional as F

import reparam_zoo as rz
from reparam_zoo.engine import kernels as K
from reparam_zoo.engine.primitives.basis_residual import BasisResidualConv2d
from reparam_zoo.engine.primitives.identity_residual import IdentityResidualConv2d
from reparam_zoo.engine.primitives.weight_norm import NormalizedConv2d
from reparam_zoo.engine.steps import CONV_PARAMS, ConvStep, step_kernel

from tests.conftest import assert_close, rand


def test_basis_kernel_then_1x1_is_the_row_major_kxk_kernel():
    c, o, kh, kw, mult = 3, 4, 3, 2, 7
    w = rand(o, c, kh * kw)  # W[o, c, d]
    w1 = torch.cat([w, torch.zeros(o, c, mult - kh * kw, dtype=w.dtype)], 2).reshape(o, c * mult, 1, 1)
    x = rand(2, c, 8, 9)
    chained = F.conv2d(F.conv2d(x, K.basis_kernel(c, mult, (kh, kw), dtype=torch.float64), groups=c), w1)
    assert_close(F.conv2d(x, w.reshape(o, c, kh, kw)), chained)
    with pytest.raises(ValueError, match="multiplier"):
        K.basis_kernel(2, 8, 3)


def test_normalize_filters_gives_unit_filters():
    w = rand(5, 3, 3, 3)
    n = K.normalize_filters(w)
    assert torch.allclose(n.flatten(1).norm(dim=1), torch.ones(5, dtype=w.dtype))
    assert_close(F.normalize(w.flatten(1)).view_as(w), n)


def _step_kernel_conv(m, x):
    sk = step_kernel(m.double(), m.in_channels)
    return F.conv2d(x, sk.weight, sk.bias, stride=sk.stride, dilation=sk.dilation, groups=sk.groups)


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_identity_residual_conv_starts_as_identity_and_converts(groups):
    m = IdentityResidualConv2d(4, 4, 1, groups=groups, bias=False).double()
    x = rand(2, 4, 5, 5)
    assert torch.equal(m(x), x)  # W zero-initialised: exactly the identity
    with torch.no_grad():
        m.weight.normal_()
    assert_close(F.conv2d(x, m.weight + K.identity_kernel(4, groups, 1, dtype=torch.float64), groups=groups), m(x))
    assert_close(m(x), _step_kernel_conv(m, x))
    assert sum(p.numel() for p in m.parameters()) == 4 * 4 // groups  # I is not a parameter


def test_basis_residual_conv_starts_as_the_plain_conv_and_converts():
    m = BasisResidualConv2d(3, 3 * 9, 3, groups=3, bias=False).double()
    w1 = rand(5, 27, 1, 1)
    x = rand(2, 3, 7, 7)
    plain = w1.reshape(5, 3, 9)  # W[o, c, d] as a 3x3 kernel
    assert_close(F.conv2d(x, plain.reshape(5, 3, 3, 3)), F.conv2d(m(x), w1))
    with torch.no_grad():
        m.weight.normal_()
    assert_close(m(x), _step_kernel_conv(m, x))


def test_normalized_conv_forward_and_converter():
    m = NormalizedConv2d(3, 4, 3, bias=True).double()
    x = rand(1, 3, 6, 6)
    assert_close(F.conv2d(x, F.normalize(m.weight.flatten(1)).view_as(m.weight), m.bias), m(x))
    assert_close(m(x), _step_kernel_conv(m, x))


@pytest.mark.parametrize("step,msg", [
    (ConvStep(4, 8, (1, 1), param="identity"), "needs in == out"),
    (ConvStep(4, 4, (2, 2), param="identity"), "odd kernel"),
    (ConvStep(4, 36, (3, 3), groups=1, param="basis"), "must be depthwise"),
    (ConvStep(4, 16, (3, 3), groups=4, param="basis"), "multiplier >= prod\\(kernel\\) = 9"),
])
def test_parameterised_convs_check_their_steps(step, msg):
    with pytest.raises(rz.SpecError, match=msg):
        step.validate()


def test_conv_params_registry_lists_the_primitives():
    assert {"plain", "identity", "basis", "normalized"} <= set(CONV_PARAMS.names())
    with pytest.raises(rz.SpecError, match="did you mean 'basis'"):
        rz.load_spec("name: x\nbranches: [{type: seq, steps: [{type: conv, kernel: 1, param: basiss}]}]")


DOCONV = """
name: do
kernel: 3
act: identity
branches:
  - type: seq
    norm: scale
    train_as: {mode}
    steps:
      - {{type: conv, kernel: 3, groups: depthwise, out_channels: in, multiplier: 9, param: basis}}
      - {{type: conv, kernel: 1, bias: true}}
"""


@pytest.mark.parametrize("stride,groups", [(1, 1), (2, 1), (1, 2)])
def test_train_as_kernel_is_the_same_function_with_the_same_parameters(stride, groups):
    torch.manual_seed(0)
    feats = rz.build_block(DOCONV.format(mode="features"), 4, 6, stride=stride, groups=groups).double()
    kern = rz.build_block(DOCONV.format(mode="kernel"), 4, 6, stride=stride, groups=groups).double()
    kern.load_state_dict(feats.state_dict())
    with torch.no_grad():
        for p in feats.parameters():
            p.normal_()
    kern.load_state_dict(feats.state_dict())
    assert type(kern.branches[0]).__name__ == "ComposedChain"
    x = rand(2, 4, 9, 8)
    y1, y2 = feats.train()(x), kern.train()(x)
    assert_close(y1, y2)
    (y1.square().sum()).backward()
    (y2.square().sum()).backward()
    for (n, p), q in zip(feats.named_parameters(), kern.parameters()):
        assert_close(p.grad, q.grad, rel=1e-10), n
    assert rz.verify(kern, (2, 4, 9, 8), randomize=True).ok


def test_train_as_kernel_refuses_batchnorm():
    with pytest.raises(rz.SpecError, match=r"branches\.0\.train_as: .*BatchNorm"):
        rz.build_block("name: x\nbranches: [{type: kxk, train_as: kernel}]", 4, 4)


def test_when_selects_branches_for_depthwise_blocks():
    spec = """
name: w
branches:
  - type: kxk
  - type: conv
    kernel: 1
    when: not_depthwise
  - type: avgpool
    when: depthwise
"""
    dense = rz.build_block(spec, 4, 4, groups=1)
    dw = rz.build_block(spec, 4, 4, groups=4)
    assert [i.spec.type for i in dense.branch_info] == ["kxk", "conv"]
    assert [i.spec.type for i in dw.branch_info] == ["kxk", "avgpool"]
