import os
import tempfile

import pytest
import torch

# ultralytics (a test dependency) must never download, nor write its settings into the home folder: set
# before any test module imports it
os.environ["YOLO_OFFLINE"] = "1"
os.environ["YOLO_CONFIG_DIR"] = tempfile.mkdtemp(prefix="rz-yolo-config-")


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
# examples with `python -m pytest --hypothesis-profile=explore tests/engine/test_hypothesis.py`.
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile("ci")


@pytest.fixture
def fashion_mnist_dir():
    """The installed Fashion-MNIST (Debian's dataset-fashion-mnist or $FASHION_MNIST_DIR). Skipped where it
    is not installed, except under CI (.ci/run installs it and sets REPARAM_ZOO_REQUIRE_FASHION=1), where a
    missing dataset is a failure, not a skip."""
    import os

    from reparam_zoo.bench.data import DataError, idx_dir

    try:
        return idx_dir("fashion-mnist")
    except DataError as exc:
        if os.environ.get("REPARAM_ZOO_REQUIRE_FASHION"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))
