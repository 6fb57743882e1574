"""``frozen: true`` BatchNorms (a norm's option and a ``seq`` step's): running statistics in training mode
too, never updated, gamma/beta still learning; the block folds exactly and equals itself across modes."""

import pytest
import torch

import reparam_zoo as rz
from reparam_zoo.engine.steps import RunningStats
from reparam_zoo.engine.verify import relative_error
from reparam_zoo.errors import SpecError
from reparam_zoo.spec.lookup import with_frozen_norms

FROZEN = """
name: frozen_dbb_like
branches:
  - {type: kxk, norm: {type: bn, frozen: true, eps: 0.001}}
  - {type: seq, steps: [{type: conv, kernel: 1}, {type: bn, frozen: true}, {type: conv, kernel: 3}],
     norm: {type: bn, frozen: true}}
  - {type: identity, norm: {type: bn, frozen: true}}
"""


def test_frozen_batchnorms_use_running_statistics_in_training_and_fold_exactly():
    torch.manual_seed(0)
    block = rz.randomize_norms(rz.build_block(FROZEN, 6, 6), seed=1).double()
    norms = [m for m in block.modules() if isinstance(m, RunningStats)]
    assert len(norms) == 4 and all(isinstance(m, torch.nn.BatchNorm2d) for m in norms)
    x = torch.randn(3, 6, 9, 9, dtype=torch.float64)
    stats = [m.running_mean.clone() for m in norms]
    train_out = block.train()(x)
    assert all(torch.equal(m.running_mean, s) for m, s in zip(norms, stats))  # never updated
    train_out.square().mean().backward()
    assert all(m.weight.grad is not None and m.weight.grad.abs().sum() > 0 for m in norms)  # gamma learns
    eval_out = block.eval()(x)
    assert relative_error(train_out.detach(), eval_out.detach()) <= 1e-14
    assert rz.verify(block, (2, 6, 9, 9), dtype=torch.float64).max_rel <= 1e-12


def test_with_frozen_norms_freezes_every_batchnorm_of_a_spec_and_only_batchnorms():
    for name in rz.list_specs():
        spec = with_frozen_norms(rz.get_spec(name))
        assert spec.to_dict()["name"] == name
        block = rz.build_block(spec, 8, 8)
        bns = [m for m in block.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        assert all(isinstance(m, RunningStats) for m in bns), name
    qa = with_frozen_norms(rz.get_spec("qarepvgg"))  # norm_after too
    assert qa.norm_after.frozen


@pytest.mark.parametrize("text", ["branches:\n  - {type: kxk, norm: {type: scale, frozen: true}}",
                                  "branches: [{type: kxk}]\nnorm_after: {type: none, frozen: true}"])
def test_frozen_is_refused_where_it_means_nothing(text):
    with pytest.raises(SpecError, match="frozen: true is for a BatchNorm"):
        rz.load_spec(f"name: x\n{text}\n")
