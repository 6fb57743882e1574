"""INT8: a folded net quantized by ONNX Runtime (QDQ, per-channel int8 weights, calibrated int8
activations), its graph checked, INT8 measured against FP32; export --int8 and compare --int8."""

import json
import math

import pytest
import torch

import reparam_zoo as rz
from reparam_zoo.cli.app import main
from reparam_zoo.interop.export import ExportError, export_onnx

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from reparam_zoo.interop.quantize import check_int8_graph, kernel_stats, onnx_logits, quantize_onnx  # noqa: E402


def _digits_net(block="repvgg"):
    from reparam_zoo.bench.data import load_data

    data = load_data("digits", 16)
    torch.manual_seed(0)
    model = rz.randomize_norms(rz.build_model("tiny_vgg", 10, block=block, in_channels=1)).eval()
    return model, data


def test_quantize_onnx_quantizes_every_conv_and_measures_int8_against_fp32(tmp_path):
    model, data = _digits_net()
    path = tmp_path / "net.onnx"
    rep = quantize_onnx(model, data.train_x[:64], path, check=data.val_x[:200], labels=data.val_y[:200])
    folded_convs = sum(isinstance(m, torch.nn.Conv2d) for m in rz.fold_model(model).modules())
    assert rep.convs == rep.quantized_convs == folded_convs == 5
    assert rep.ops["QuantizeLinear"] >= folded_convs and rep.ops["DequantizeLinear"] > folded_convs
    assert "BatchNormalization" not in rep.ops and rep.per_channel
    assert path.is_file() and (tmp_path / "net.fp32.onnx").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == []  # the temporary folder is gone
    # the weights are really int8, one scale per output channel
    graph = onnx.load(str(path)).graph
    int8 = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4]
    assert len(int8) == folded_convs
    # INT8 is close to FP32 but not identical (it was quantized), and the report says so
    x = data.val_x[:200]
    fp32, q = onnx_logits(tmp_path / "net.fp32.onnx", x), onnx_logits(path, x)
    assert 0 < (fp32 - q).abs().max().item() == pytest.approx(rep.max_logit_diff, rel=1e-6)
    assert rep.top1_agreement == pytest.approx((fp32.argmax(1) == q.argmax(1)).double().mean().item())
    assert rep.top1_agreement > 0.8 and rep.max_logit_diff < 0.5 * rep.max_logit
    with torch.no_grad():
        torch_logits = rz.fold_model(model).eval()(x)
    assert (torch_logits - fp32).abs().max().item() < 1e-4  # the FP32 file is the folded net
    assert rep.fp32_accuracy == pytest.approx((fp32.argmax(1) == data.val_y[:200]).double().mean().item())
    assert rep.int8_accuracy == pytest.approx((q.argmax(1) == data.val_y[:200]).double().mean().item())
    assert len(rep.layers) == folded_convs and all(r["range_ratio"] >= 1 for r in rep.layers)
    assert "5/5 Conv quantized" in str(rep)


def test_the_int8_graph_check_refuses_what_is_not_quantized(tmp_path):
    model, _ = _digits_net()
    export_onnx(model, (1, 1, 16, 16), tmp_path / "fp32.onnx")
    with pytest.raises(ExportError, match="is not quantized"):
        check_int8_graph(onnx.load(str(tmp_path / "fp32.onnx")).graph)
    # per-tensor weights where per-channel was asked for
    model, data = _digits_net()
    quantize_onnx(model, data.train_x[:16], tmp_path / "pt.onnx", per_channel=False)
    graph = onnx.load(str(tmp_path / "pt.onnx")).graph
    check_int8_graph(graph, per_channel=False)
    with pytest.raises(ExportError, match="one weight scale per output channel"):
        check_int8_graph(graph, per_channel=True)
    with pytest.raises(ExportError, match="calibration images"):
        quantize_onnx(model, torch.zeros(0, 1, 16, 16), tmp_path / "none.onnx")


def test_kernel_stats_sees_an_outlier_channel_and_heavy_tails():
    torch.manual_seed(0)
    w = torch.randn(8, 64, 3, 3)
    s = kernel_stats(w)
    assert 1 <= s["range_ratio"] < 2 and abs(s["kurtosis_mean"] - 3) < 0.5  # Gaussian channels
    w[3] *= 20  # one channel 20x wider: one per-tensor scale would waste the others' levels
    w[5, 0, 1, 1] = 100.0  # one weight far out: heavy tail inside its channel
    s = kernel_stats(w)
    assert s["range_ratio"] > 15 and s["kurtosis_max"] > 100
    assert kernel_stats(torch.ones(4, 2, 1, 1))["range_ratio"] == 1
    assert math.isnan(kernel_stats(torch.ones(4, 2, 1, 1))["kurtosis_max"])  # constant channels: no shape


def test_export_int8_cli_writes_both_models_and_reports_agreement(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export", "--net", "tiny_vgg", "--in-channels", "1", "--num-classes", "10", "--onnx", str(out),
                 "--int8", "--data", "digits", "--calibration", "32", "--check-images", "100"]) == 0
    text = capsys.readouterr().out
    assert out.is_file() and (tmp_path / "m.int8.onnx").is_file()
    assert "5/5 Conv quantized" in text and "top-1 agreement" in text and "100 held-out images" in text
    assert f"wrote {out}: Conv x5" in text and "onnxruntime vs PyTorch" in text  # the FP32 export's own report
    assert "max/median channel range" in text
    # data with other channels than the net: one line, nothing written
    bad = tmp_path / "bad.onnx"
    assert main(["export", "--net", "tiny_vgg", "--in-channels", "3", "--num-classes", "10", "--onnx", str(bad),
                 "--int8", "--data", "digits"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1 channel(s)" in err[0] and not bad.exists()


def test_compare_int8_reports_int8_accuracy_drop_and_kernel_statistics(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "repvgg", "--data", "digits", "--limit", "1000", "--epochs", "3", "--seeds", "2",
                 "--int8", "--calibration", "32", "--quiet", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["int8_calibration"] == 32
    for run in res["runs"]:
        assert 0 <= run["int8_val_acc"] <= 1 and run["int8_calibration_images"] == 32
        assert run["int8_drop"] == pytest.approx(run["deploy_val_acc"] - run["int8_val_acc"])
        assert abs(run["onnx_fp32_val_acc"] - run["deploy_val_acc"]) < 0.01  # ONNX FP32 = the deployed net
        assert run["int8_quantized_convs"] == 5 and len(run["kernel_layers"]) == 5
    rows = {r["block"]: r for r in res["summary"]}
    assert "int8_drop_points" in rows["plain"] and "int8_vs_control" in rows["repvgg"]
    ok = [s for s in (0, 1) if not any(r["failed"] for r in res["runs"] if r["seed"] == s)]
    assert ok and rows["repvgg"]["int8_drop_vs_control"]["n"] == len(ok)
    md = (out / "results.md").read_text()
    assert "| block | FP32 acc % | INT8 acc % |" in md and "| repvgg |" in md.split("INT8 acc %")[1]
    assert "Under INT8 the largest mean drop is" in md
    assert "kernel_layers" not in (out / "results.csv").read_text().splitlines()[0]
    # a diverged run is not quantized (no ranges to calibrate): the summary uses the runs that were
    from reparam_zoo.bench import report

    runs = [dict(r) for r in res["runs"]]
    for k in [k for k in runs[-1] if k.startswith(("int8_", "kernel_", "onnx_"))]:
        del runs[-1][k]
    runs[-1]["finite_outputs"] = False
    rows = {r["block"]: r for r in report.summarize(runs, "plain")}
    assert rows[runs[-1]["block"]]["int8_seeds"] == 1
    assert "INT8 acc %" in report.int8_markdown(list(rows.values()), "plain", 32)


def test_the_int8_study_net_and_script_are_valid():
    """benchmarks/int8.sh's deeper net builds, and the script names real flags."""
    from pathlib import Path

    from reparam_zoo.cli.app import build_parser

    root = Path(__file__).resolve().parents[2]
    net = rz.load_net(root / "benchmarks" / "int8_deep_vgg.yaml")
    assert sum(isinstance(m, rz.RepBlock) for m in rz.build_model(net, 10, in_channels=1).modules()) == 13
    script = (root / "benchmarks" / "int8.sh").read_text().replace("\\\n", " ")
    lines = [ln.split("python -m reparam_zoo ", 1)[1] for ln in script.splitlines() if "python -m reparam_zoo " in ln]
    assert len(lines) == 2
    for line in lines:
        assert build_parser().parse_args(line.split()).int8


def test_int8_errors_are_one_line_export_errors_and_kept_batchnorms_are_allowed(tmp_path):
    from onnxruntime.quantization import QuantFormat, quantize_static

    model, data = _digits_net()
    # NaN weights: refused by the FP32 check before ONNX Runtime sees them (NaN used to compare as "close")
    bad, _ = _digits_net()
    with torch.no_grad():
        next(bad.parameters()).fill_(float("nan"))
    with pytest.raises(ExportError, match="not finite"):
        quantize_onnx(bad, data.train_x[:16], tmp_path / "nan.onnx")
    assert not (tmp_path / "nan.onnx").exists()
    nan_images = data.val_x[:8].clone()
    nan_images[0, 0, 0, 0] = float("nan")
    with pytest.raises(ExportError, match="not finite; nothing written"):
        quantize_onnx(model, data.train_x[:16], tmp_path / "n.onnx", check=nan_images)
    assert not (tmp_path / "n.onnx").exists() and not (tmp_path / "n.fp32.onnx").exists()
    with pytest.raises(ExportError, match="labels"):
        quantize_onnx(model, data.train_x[:16], tmp_path / "l.onnx", labels=data.train_y[:3])
    # a weight quantized in the graph (DequantizeLinear of QuantizeLinear of a float constant) is not stored int8
    export_onnx(model, (1, 1, 16, 16), tmp_path / "f.onnx")

    class Reader:
        def __init__(self):
            self.left = [{"input": data.train_x[:8].numpy()}]

        def get_next(self):
            return self.left.pop() if self.left else None

    quantize_static(str(tmp_path / "f.onnx"), str(tmp_path / "qdq.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, extra_options={"AddQDQPairToWeight": True})
    with pytest.raises(ExportError, match="computed in the graph"):
        check_int8_graph(onnx.load(str(tmp_path / "qdq.onnx")).graph)
    # a BatchNorm the folded model keeps (outside any block) is allowed, as export_onnx allows it
    kept = torch.nn.Sequential(torch.nn.BatchNorm2d(1), model).eval()
    rep = quantize_onnx(kept, data.train_x[:16], tmp_path / "bn.onnx")
    assert rep.ops["BatchNormalization"] == 1 and rep.quantized_convs == rep.convs == 5
