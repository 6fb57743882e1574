"""bench/measure: measuring a trained model leaves it as it was."""

import torch

import reparam_zoo as rz
from reparam_zoo.bench.measure import saved_activation_mb


def test_measuring_saved_activations_leaves_the_norm_statistics_alone():
    torch.manual_seed(0)
    model = torch.nn.Sequential(rz.build_block("repvgg", 3, 8), torch.nn.Flatten(), torch.nn.LazyLinear(4))
    model(torch.randn(2, 3, 6, 6))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert saved_activation_mb(model, torch.randn(4, 3, 6, 6) + 3, torch.tensor([0, 1, 2, 3])) > 0
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())
