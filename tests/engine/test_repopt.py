"""RepOptimizer from specs (engine/repopt.py): SGD on a multi-branch CSLA net and RepOptSGD on its plain
net follow the same trajectory (float64), for RepVGG-, ACB-, MobileOne- and dilated-UniRepLKNet-style
blocks; branches outside the equivalence are refused with the branch and the rule."""

import pytest
import torch
from torch import nn

import reparam_zoo as rz
from reparam_zoo.engine.fastfold import fold_weights
from reparam_zoo.engine.repopt import repopt
from reparam_zoo.engine.verify import relative_error
from reparam_zoo.errors import SpecError

C = "norm: {type: scale, init: %s, learnable: false}"
SPECS = {
    "repvgg": f"""name: csla_repvgg
act: relu
norm_after: bn
branches:
  - {{type: kxk, {C % 0.7}}}
  - {{type: conv, kernel: 1, {C % 0.4}}}
  - {{type: identity, optional: true, {C % 1.1}}}
""",
    "acb": f"""name: csla_acb
act: relu
norm_after: bn
branches:
  - {{type: kxk, {C % 0.8}}}
  - {{type: 1xk, {C % 0.5}}}
  - {{type: kx1, {C % 0.6}}}
""",
    "mobileone": f"""name: csla_mobileone
norm_after: bn
act: relu
branches:
  - {{type: kxk, count: 3, {C % 0.5}}}
  - {{type: conv, kernel: 1, {C % 0.3}}}
  - {{type: identity, optional: true, {C % 0.9}}}
""",
    "unireplknet": f"""name: csla_dilated
norm_after: bn
act: relu
kernel: 7
branches:
  - {{type: kxk, {C % 0.9}}}
  - {{type: conv, kernel: 3, dilation: 2, {C % 0.4}}}
  - {{type: conv, kernel: 3, dilation: 3, {C % 0.3}}}
""",
}


def _net(spec):
    torch.manual_seed(0)
    net = nn.Sequential(rz.build_block(spec, 3, 6, stride=2), rz.build_block(spec, 6, 6), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(6, 4)).double()
    with torch.no_grad():  # per-output-channel constants, as a hyper-search would set them
        for m in net.modules():
            if isinstance(m, rz.engine.steps.ChannelScale):
                m.weight.mul_(torch.rand_like(m.weight) + 0.5)
    return net


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("name", list(SPECS))
def test_sgd_on_the_multi_branch_net_equals_repopt_on_the_plain_net(name, nesterov):
    net = _net(SPECS[name])
    plain, opt_plain = repopt(net, lr=0.05, momentum=0.9, weight_decay=1e-3, nesterov=nesterov)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3, nesterov=nesterov)
    sched = torch.optim.lr_scheduler.StepLR(opt, 5, 0.5)
    sched_plain = torch.optim.lr_scheduler.StepLR(opt_plain, 5, 0.5)
    gen = torch.Generator().manual_seed(1)
    for _ in range(15):
        x = torch.randn(8, 3, 12, 12, dtype=torch.float64, generator=gen)
        y = torch.randint(0, 4, (8,), generator=gen)
        for model, o, s in ((net, opt, sched), (plain, opt_plain, sched_plain)):
            o.zero_grad()
            nn.functional.cross_entropy(model.train()(x), y).backward()
            o.step()
            s.step()
    for block, seq in zip([net[0], net[1]], [plain[0], plain[1]]):
        assert relative_error(seq.branches[0][0].weight, fold_weights(block, norm_after=False)[0]) <= 1e-9
    x = torch.randn(4, 3, 12, 12, dtype=torch.float64)
    with torch.no_grad():
        assert relative_error(plain.eval()(x), net.eval()(x)) <= 1e-9
    deployed = rz.fold_model(plain)  # the plain net deploys as every net does: its BatchNorms folded into the convs
    assert [type(m) for m in deployed[0]] == [nn.Conv2d, nn.ReLU] and deployed[0][0].bias is not None
    with torch.no_grad():
        assert relative_error(deployed.eval()(x), plain(x)) <= 1e-12
    moved = fold_weights(_net(SPECS[name])[1], norm_after=False)[0]
    assert relative_error(plain[1].branches[0][0].weight, moved) > 1e-3  # it trained


@pytest.mark.parametrize("spec, rule", [
    ("branches: [{type: kxk}]", "BatchNorm2d inside the branch"),
    ("branches: [{type: kxk, norm: scale}]", "a learnable scale"),
    ("branches: [{type: 1x1_kxk, norm: none, mid_norm: none}]", "a chain of convs"),
])
def test_branches_outside_the_equivalence_are_refused_with_the_branch_and_the_rule(spec, rule):
    block = rz.build_block(f"name: x\n{spec}\n", 4, 4)
    with pytest.raises(SpecError, match=rule) as info:
        repopt(block, lr=0.1)
    assert "branches.0" in str(info.value)
    with pytest.raises(SpecError, match="BatchNorm2d inside the branch"):
        repopt(rz.build_block("dbb", 4, 4), lr=0.1)


def test_a_constant_scale_is_a_buffer_and_refused_elsewhere():
    block = rz.build_block(f"name: x\nbranches: [{{type: kxk, {C % 0.5}}}]\n", 4, 4)
    scale = [m for m in block.modules() if isinstance(m, rz.engine.steps.ChannelScale)][0]
    assert not scale.weight.requires_grad and "branches.0.1.weight" in block.state_dict()
    with pytest.raises(SpecError, match="learnable: false is for a scale"):
        rz.load_spec("name: x\nbranches: [{type: kxk, norm: {type: bn, learnable: false}}]\n")


def test_searched_scales_are_frozen_into_constants_and_compiled():
    """The paper's hyper-search: learnable scales trained briefly, frozen (constants with their values,
    the spec saying learnable: false), then compiled: the frozen net computes what the trained one did, and
    repopt trains its plain net along the frozen net's SGD trajectory."""
    from reparam_zoo.engine.repopt import freeze_scales
    from reparam_zoo.engine.steps import ChannelScale

    learnable = SPECS["acb"].replace("learnable: false", "learnable: true")
    net = _net(learnable)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    for _ in range(3):
        opt.zero_grad()
        net.train()(torch.randn(4, 3, 12, 12, dtype=torch.float64)).square().mean().backward()
        opt.step()
    frozen = freeze_scales(net)
    scales = [m for m in frozen.modules() if isinstance(m, ChannelScale)]
    assert scales and not any(m.weight.requires_grad for m in scales)
    assert all(not n.learnable for b in (frozen[0], frozen[1]) for n in [br.norm for br in b.spec.branches])
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    with torch.no_grad():
        assert relative_error(frozen.eval()(x), net.eval()(x)) <= 1e-14
    plain, opt_plain = repopt(frozen, lr=0.05, momentum=0.9)
    opt = torch.optim.SGD(frozen.parameters(), lr=0.05, momentum=0.9)
    for _ in range(5):
        for model, o in ((frozen, opt), (plain, opt_plain)):
            o.zero_grad()
            model.train()(x).square().mean().backward()
            o.step()
    with torch.no_grad():
        assert relative_error(plain.eval()(x), frozen.eval()(x)) <= 1e-9


def test_a_frozen_stage_stays_frozen_and_half_frozen_blocks_are_refused():
    net = _net(SPECS["repvgg"])
    net[0].requires_grad_(False)
    plain, _ = repopt(net, lr=0.1)
    assert not plain[0].branches[0][0].weight.requires_grad and plain[1].branches[0][0].weight.requires_grad
    net[1].branches[0][0].weight.requires_grad_(False)
    with pytest.raises(SpecError, match="frozen"):
        repopt(net, lr=0.1)


def test_freeze_scales_leaves_norm_after_alone():
    from reparam_zoo.engine.repopt import freeze_scales

    block = rz.build_block("name: x\nnorm_after: {type: scale, init: 2}\nbranches: [{type: kxk, norm: scale}]\n",
                           4, 4)
    frozen = freeze_scales(block)
    assert frozen.norm_after.weight.requires_grad and frozen.spec.norm_after.learnable
    assert not frozen.branches[0][-1].weight.requires_grad and not frozen.spec.branches[0].norm.learnable


def test_repoptsgd_is_torch_sgd_and_refuses_what_breaks_the_equivalence():
    net = _net(SPECS["acb"])
    plain, opt = repopt(net, lr=0.1, momentum=0.9)
    assert isinstance(opt, torch.optim.SGD)
    for key, value in (("dampening", 0.5), ("maximize", True)):
        opt.param_groups[0][key] = value
        plain(torch.randn(2, 3, 12, 12, dtype=torch.float64)).sum().backward()
        with pytest.raises(ValueError, match="maximize=False and dampening=0"):
            opt.step()
        opt.param_groups[0][key] = not value if key == "maximize" else 0


def test_csla_form_turns_branch_norms_into_scales_searched_or_constant():
    from reparam_zoo.spec.lookup import csla_form

    spec = rz.load_spec("name: s\nbranches: [{type: kxk}, {type: conv, kernel: 1, norm: {type: scale, init: 0.5}},"
                        " {type: identity, optional: true, norm: {type: scale, learnable: false}}]\n")
    for learnable in (True, False):
        csla = csla_form(spec, learnable)
        norms = [b.norm for b in csla.branches]
        assert [n.type for n in norms] == ["scale"] * 3 and csla.norm_after.type == "bn"
        assert [n.learnable for n in norms] == [learnable] * 3 and norms[1].init == 0.5
    repopt(rz.build_block(csla_form(spec, learnable=False), 4, 4), lr=0.1)  # compiles: every scale constant
    with pytest.raises(SpecError, match="a learnable scale"):
        repopt(rz.build_block(csla_form(spec, learnable=True), 4, 4), lr=0.1)


@pytest.mark.parametrize("dims, shape", [(0, (3, 4)), (1, (3, 4, 9)), (3, (2, 4, 5, 5, 5))])
def test_linear_1d_and_3d_blocks_compile_and_follow_sgd(dims, shape):
    k = 1 if dims == 0 else 3
    spec = (f"name: l\nkernel: {k}\nnorm_after: bn\nbranches: [{{type: conv, kernel: {k}, {C % 0.5}}}, "
            f"{{type: conv, kernel: 1, {C % 0.3}}}]\n")
    torch.manual_seed(0)
    block = rz.build_block(spec, 4, 4, dims=dims).double()
    plain, opt_plain = repopt(block, lr=0.1, momentum=0.9, weight_decay=1e-3)
    opt = torch.optim.SGD(block.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    for _ in range(5):
        x = torch.randn(*shape, dtype=torch.float64)
        for model, o in ((block, opt), (plain, opt_plain)):
            o.zero_grad()
            model.train()(x).square().mean().backward()
            o.step()
    x = torch.randn(*shape, dtype=torch.float64)
    with torch.no_grad():
        assert relative_error(plain.eval()(x), block.eval()(x)) <= 1e-9
        assert relative_error(rz.fold_model(plain)(x), block(x)) <= 1e-9
