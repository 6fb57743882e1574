"""Fashion-MNIST / MNIST from IDX files: the reader's checks, where the data is found, and a real
comparison on Fashion-MNIST (the Debian package)."""

from __future__ import annotations

import gzip
import json
import struct

import numpy as np
import pytest

from reparam_zoo.bench import data as data_mod
from reparam_zoo.cli.app import main
from reparam_zoo.bench.data import DataError, load_data, read_idx


def _idx(array: np.ndarray, code: int = 0x08) -> bytes:
    return bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape) + array.tobytes()


def _write_set(root, n_train=40, n_val=20, compress=True):
    rng = np.random.default_rng(0)
    parts = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
             "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
             "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_val, 28, 28), dtype=np.uint8),
             "t10k-labels-idx1-ubyte": (np.arange(n_val) % 10).astype(np.uint8)}
    root.mkdir(parents=True, exist_ok=True)
    for name, array in parts.items():
        raw = _idx(array)
        if compress:
            (root / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (root / name).write_bytes(raw)
    return parts


def test_idx_files_are_read_raw_or_gzip(tmp_path):
    for compress in (True, False):
        parts = _write_set(tmp_path / str(compress), compress=compress)
        d = load_data(f"mnist:{tmp_path / str(compress)}", 16)
        assert d.name == "mnist" and d.train_x.shape == (40, 1, 16, 16) and d.val_x.shape == (20, 1, 16, 16)
        assert d.num_classes == 10 and d.train_y.tolist() == parts["train-labels-idx1-ubyte"].tolist()


@pytest.mark.parametrize("content, message", [
    (b"", "bad magic number empty"),
    (b"\x1f\x8b\x08\x00garbage", "cannot read it"),  # a corrupt gzip stream
    (b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated IDX header"),
    (bytes([0, 0, 0x08, 1]) + struct.pack(">I", 10) + bytes(5), "the header says [10] values"),
    (b"PK\x03\x04 a zip, not IDX", "not an IDX file"),
])
def test_corrupt_idx_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "x-idx1-ubyte"
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        read_idx(path)
    assert message in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_images_and_labels_that_do_not_match_are_refused(tmp_path):
    _write_set(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(np.zeros(7, dtype=np.uint8))))
    with pytest.raises(DataError, match="val images .* and labels .* do not match"):
        load_data(f"mnist:{tmp_path}", 16)


def test_missing_fashion_mnist_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(data_mod.IDX_DIRS, "fashion-mnist", ("FASHION_MNIST_DIR", str(tmp_path / "nowhere")))
    monkeypatch.delenv("FASHION_MNIST_DIR", raising=False)
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_data("fashion-mnist", 16)
    assert data_mod.default_data() == "digits"  # auto falls back to the embedded digits
    assert main(["compare", "repvgg", "--data", "fashion-mnist", "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "FASHION_MNIST_DIR" in err
    # $FASHION_MNIST_DIR is looked at first
    _write_set(tmp_path / "mine")
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path / "mine"))
    assert data_mod.default_data() == "fashion-mnist" and len(load_data("auto", 16).train_x) == 40


def test_the_debian_fashion_mnist_is_found_and_complete(fashion_mnist_dir):
    d = load_data("auto", 16)
    assert d.name == "fashion-mnist" and d.num_classes == 10
    assert d.train_x.shape == (60000, 1, 16, 16) and d.val_x.shape == (10000, 1, 16, 16)
    assert np.bincount(d.train_y.numpy()).tolist() == [6000] * 10 and np.bincount(d.val_y.numpy()).tolist() == [1000] * 10
    assert abs(float(d.train_x.mean())) < 1e-3 and abs(float(d.train_x.std()) - 1) < 1e-2  # normalised


def test_a_real_comparison_on_fashion_mnist_learns_and_pairs_seeds(fashion_mnist_dir, tmp_path):
    out = tmp_path / "out"
    assert main(["compare", "acb", "--train-limit", "2048", "--epochs", "2", "--seeds", "2", "--latency-runs", "2",
                 "--quiet", "--out", str(out)]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["config"]["data"] == "fashion-mnist" and result["config"]["val_images"] == 10000
    assert all(r["val_acc"] > 0.5 and not r["failed"] for r in result["runs"])  # far above chance (10%)
    (acb,) = [r for r in result["summary"] if r["block"] == "acb"]
    assert acb["vs_control"]["n"] == 2
    assert "one validation image is 0.01 points" in result["conclusion"]


def test_the_limit_is_applied_before_resizing_and_a_wrong_env_dir_is_an_error(tmp_path, monkeypatch):
    _write_set(tmp_path / "set", n_train=40)
    d = load_data(f"mnist:{tmp_path / 'set'}", 16, limit=8)
    assert len(d.train_x) == 8 and d.train_x.is_contiguous() and d.train_x.untyped_storage().nbytes() == 8 * 16 * 16 * 4
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="nowhere lacks the IDX files"):
        data_mod.default_data()  # set explicitly and wrong: no silent fallback to the digits


def test_every_shipped_block_trains_in_the_default_net(fashion_mnist_dir):
    """One short epoch on real Fashion-MNIST for every shipped block in compare's default net: each far above
    chance (10%), so that no block of the zoo can fail silently (DiracNet without its BatchNorm stayed at 10.00%)."""
    from reparam_zoo.bench.compare import default_blocks
    from reparam_zoo.bench.trainer import TrainConfig, train_and_measure
    from reparam_zoo.engine.nets import load_net
    from reparam_zoo.spec.lookup import list_specs

    net = load_net("tiny_vgg")
    data = load_data("fashion-mnist", net.input_size, 2048)
    data.val_x, data.val_y = data.val_x[:2000], data.val_y[:2000]
    cfg = TrainConfig(net=net, data=data, epochs=1, batch_size=32, progress=False, run_latency=False)
    blocks = default_blocks(net)
    # what compare leaves out of a conv net of one block kind (engine.nets.block_fits): a 1x1 block (no window),
    # a 31x31 kernel on 16x16 inputs, a block without activation (a stack of them is one linear map)
    assert set(list_specs()) - set(blocks) == {"expandnet_fc", "replknet", "unireplknet"}
    acc = {b: train_and_measure(cfg, b, 0)["val_acc"] for b in blocks}
    assert min(acc.values()) > 0.4, {b: round(a, 3) for b, a in acc.items()}
