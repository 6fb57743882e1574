import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def rand(*shape, dtype=torch.float64):
    return torch.randn(*shape, dtype=dtype)


def assert_close(a, b, rel=1e-12):
    scale = max(a.abs().max().item(), 1e-30)
    err = (a - b).abs().max().item()
    assert err / scale <= rel, f"relative error {err / scale:.3e} > {rel:.0e}"


# Hypothesis: reproducible by default (CI must not turn red on a new random draw); explore new
# examples with `python -m pytest --hypothesis-profile=explore tests/test_hypothesis.py`.
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile("ci")
