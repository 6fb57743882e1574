"""ONNX and INT8 beyond 2-D: nets of folded 1-D, 3-D, Linear and transposed blocks export with one node per
block (Conv, Gemm, ConvTranspose), onnxruntime matches PyTorch and the training form, and ONNX Runtime's
static INT8 quantizes every one of those layers per output channel — or is refused in one line where it
cannot."""

import pytest
import torch
from torch import nn

import reparam_zoo as rz
from reparam_zoo.engine import kernels as K
from reparam_zoo.engine.verify import TOLERANCES, relative_error
from reparam_zoo.interop.export import ExportError, export_onnx
from reparam_zoo.interop.quantize import (
    kernel_stats,
    layer_stats,
    linear_blocks,
    onnx_logits,
    output_channels_first,
    quantize_onnx,
)

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


def _net(kind: str) -> tuple[nn.Module, tuple[int, ...], str, int]:
    """(a small net of random blocks with random statistics, its input shape, the ONNX op of its blocks,
    blocks)."""
    torch.manual_seed(0)
    if kind == "1d":
        blocks = [rz.build_block("repvgg", 3, 8, dims=1), rz.build_block("acb_nd", 8, 8, dims=1, stride=2),
                  rz.build_block("dbb", 8, 6, dims=1)]
        shape, op = (1, 3, 24), "Conv"
    elif kind == "3d":
        blocks = [rz.build_block("repvgg", 2, 6, dims=3), rz.build_block("dbb", 6, 6, dims=3, stride=2),
                  rz.build_block("acb_nd", 6, 4, dims=3)]
        shape, op = (1, 2, 6, 7, 8), "Conv"
    elif kind == "linear":
        blocks = [rz.build_block("repvgg", 5, 16, dims=0), rz.build_block("expandnet_fc", 16, 16, dims=0),
                  rz.build_block("mobileone", 16, 6, dims=0)]
        shape, op = (1, 5), "Gemm"
    else:  # transposed: an upsampling 2-D decoder, output_padding included
        blocks = [rz.build_block("repvgg", 4, 8, transposed=True, stride=2, output_padding=1),
                  rz.build_block("acb", 8, 6, transposed=True, stride=2),
                  rz.build_block("acb_nd", 6, 4, transposed=True)]
        shape, op = (1, 4, 5, 6), "ConvTranspose"
    return rz.randomize_norms(nn.Sequential(*blocks)).eval(), shape, op, len(blocks)


@pytest.mark.parametrize("kind", ["1d", "3d", "linear", "transposed"])
def test_folded_nets_of_every_dimension_export_to_onnx_and_match_onnxruntime(kind, tmp_path):
    model, shape, op, blocks = _net(kind)
    path = tmp_path / f"{kind}.onnx"
    report = export_onnx(model, shape, path)
    assert report.ops == {op: blocks, "Relu": blocks}, report  # one node per block, no BN, no branch left
    assert report.max_rel <= TOLERANCES["export"], report
    # onnxruntime on a batch of 3 (the batch is dynamic) against the TRAINING form: the fold and the export
    x = torch.randn(3, *shape[1:])
    with torch.no_grad():
        want = model(x)
    got = onnx_logits(path, x)
    assert got.shape == want.shape and want.abs().max() > 0
    assert relative_error(got, want) <= TOLERANCES["expand"], relative_error(got, want)


def test_a_folded_block_that_is_not_one_node_is_refused(tmp_path):
    """The export counts every kind of layer: a 3-D conv used twice is two Conv nodes for one module."""

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv3d(2, 2, 3, padding=1)

        def forward(self, x):
            return self.conv(self.conv(x))

    with pytest.raises(ExportError, match="2 Conv nodes, the folded model 1"):
        export_onnx(Twice(), (1, 2, 4, 4, 4), tmp_path / "twice.onnx")


@pytest.mark.parametrize("kind", ["1d", "3d", "linear", "transposed"])
def test_int8_quantizes_every_layer_of_every_dimension_per_output_channel(kind, tmp_path):
    model, shape, op, blocks = _net(kind)
    gen = torch.Generator().manual_seed(1)
    calibration, check = torch.randn(32, *shape[1:], generator=gen), torch.randn(64, *shape[1:], generator=gen)
    path = tmp_path / "m.int8.onnx"
    rep = quantize_onnx(model, calibration, path, check=check)
    assert rep.ops[op] == blocks and "BatchNormalization" not in rep.ops
    if op == "Gemm":
        assert rep.gemms == blocks and rep.convs == 0 and f"{blocks}/{blocks} Gemm quantized" in str(rep)
    else:
        assert rep.convs == rep.quantized_convs == blocks and f"{blocks}/{blocks} {op} quantized" in str(rep)
    # the weights are int8, one scale per output channel, in the file
    graph = onnx.load(str(path)).graph
    inits = {t.name: t for t in graph.initializer}
    int8 = [t for t in graph.initializer
            if t.data_type == onnx.TensorProto.INT8 and t.name.endswith(".weight_quantized")]
    assert len(int8) == blocks
    folded = rz.fold_model(model)
    layers = [m for m in folded.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv3d, nn.ConvTranspose2d))]
    for t, layer in zip(int8, layers):
        assert list(t.dims) == list(layer.weight.shape)
        scale = inits[t.name.replace(".weight_quantized", ".weight_scale")]
        assert list(scale.dims) == [output_channels_first(layer).shape[0]]
    # INT8 is close to FP32, not equal; the kernel statistics cover every folded block
    assert 0 < rep.max_logit_diff < 0.5 * rep.max_logit and rep.top1_agreement > 0.5
    assert [r["layer"] for r in rep.layers] == [f"{i}.conv" for i in range(blocks)]
    assert all(r["channels"] == output_channels_first(m).shape[0] for r, m in zip(rep.layers, layers))


def test_a_grouped_transposed_conv_is_refused_per_channel_in_one_line_and_quantizes_per_tensor(tmp_path):
    torch.manual_seed(0)
    model = rz.randomize_norms(nn.Sequential(rz.build_block("repvgg", 4, 8, groups=2, transposed=True,
                                                            stride=2))).eval()
    x = torch.randn(16, 4, 5, 6)
    with pytest.raises(ExportError) as info:
        quantize_onnx(model, x, tmp_path / "g.onnx")
    msg = str(info.value)
    assert "\n" not in msg and "groups=2" in msg and "per_channel=False" in msg
    assert list(tmp_path.iterdir()) == []  # refused before anything was written
    rep = quantize_onnx(model, x, tmp_path / "g.onnx", per_channel=False)
    assert rep.quantized_convs == rep.convs == 1 and not rep.per_channel


def test_kernel_stats_are_per_output_channel_for_transposed_and_linear_layers():
    torch.manual_seed(0)
    t = nn.ConvTranspose3d(4, 6, 3, groups=2)
    with torch.no_grad():
        t.weight[:, 1] *= 20  # output channel 1 of group 0 and 4 of group 1 (C_out/g = 3 per group)
    w = output_channels_first(t)
    assert w.shape == (6, 2, 3, 3, 3) and torch.equal(w, K.transpose_layout(t.weight, 2))
    ranges = w.reshape(6, -1).abs().amax(1)
    assert set(ranges.topk(2).indices.tolist()) == {1, 4}
    assert kernel_stats(w)["range_ratio"] > 10 and kernel_stats(w)["channels"] == 6
    lin = nn.Linear(5, 7)
    assert kernel_stats(output_channels_first(lin))["channels"] == 7
    # a net's Linear head is not a folded kernel; a Linear block is
    net = nn.Sequential(rz.build_block("repvgg", 5, 5, dims=0), rz.build_block("plain", 5, 5, dims=0), lin)
    names = linear_blocks(net)
    assert {"0.conv", "1.conv"} <= names and "2" not in names
    assert [r["layer"] for r in layer_stats(rz.fold_model(net), names)] == ["0.conv", "1.conv"]
    assert layer_stats(rz.fold_model(net)) == []
