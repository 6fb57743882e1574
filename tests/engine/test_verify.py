"""One relative error for every check of the library, and one table of limits."""

import math

import pytest
import torch

from reparam_zoo.engine.verify import TOLERANCE, TOLERANCES, relative_error, within


def test_relative_error_is_max_abs_over_max_abs_in_float64():
    want = torch.tensor([1.0, -4.0, 2.0])
    got = torch.tensor([1.5, -4.0, 2.0])
    assert relative_error(got, want) == pytest.approx(0.5 / 4.0)
    assert relative_error(want, want) == 0.0
    assert relative_error(torch.tensor([0.0, 1e-3]), torch.zeros(2)) == pytest.approx(1e-3)  # all-zero want: absolute
    # float64 difference even for float32 inputs (no cancellation in the dtype)
    a = torch.tensor([1.0 + 2**-23], dtype=torch.float32)
    assert relative_error(a, torch.tensor([1.0], dtype=torch.float32)) == pytest.approx(2**-23)


@pytest.mark.parametrize("got, want", [
    (torch.tensor([float("nan")]), torch.tensor([1.0])),
    (torch.tensor([1.0]), torch.tensor([float("inf")])),
    (torch.ones(2), torch.ones(3)),  # shapes differ
    (torch.ones(0), torch.ones(0)),  # nothing compared
])
def test_relative_error_fails_every_limit_on_no_evidence(got, want):
    rel = relative_error(got, want)
    assert rel == math.inf
    assert not any(within(check, rel) for check in TOLERANCES)


def test_one_table_holds_every_check_and_the_fold_tolerances():
    assert {"adopt", "expand", "convert", "export"} <= set(TOLERANCES)
    assert TOLERANCE[torch.float64] == TOLERANCES["fold/float64"] == 1e-12
    assert TOLERANCE[torch.float32] == TOLERANCES["fold/float32"] == 1e-6
    assert within("expand", 1e-5) and not within("expand", 1.1e-5) and not within("adopt", float("nan"))
