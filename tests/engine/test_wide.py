"""Shipped specs at realistic widths, 56x56 inputs, float32 and float64."""

import pytest
import torch

import reparam_zoo as rz



@pytest.mark.parametrize("name", rz.list_specs())
@pytest.mark.parametrize("cin,cout,stride,groups", [(64, 64, 1, 1), (64, 128, 2, 1), (128, 128, 1, 128),
                                                    (96, 96, 1, 4)])
def test_shipped_specs_fold_within_fp32_tolerance_at_real_widths(name, cin, cout, stride, groups):
    block = rz.build_block(name, cin, cout, stride=stride, groups=groups)
    res = rz.verify(block, (2, cin, 56, 56), dtype=torch.float32, randomize=True)
    assert res.ok, res
    assert rz.verify(block, (1, cin, 28, 28), dtype=torch.float64, randomize=True).ok
