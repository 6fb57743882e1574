"""Export: every shipped net folds, exports to ONNX with one Conv per block, and matches onnxruntime;
the folded model also goes through torch.export and TorchScript."""

import pytest
import torch

import reparam_zoo as rz
from reparam_zoo.interop.export import export_onnx

pytest.importorskip("onnxruntime")


EXPORT_MAX_PARAMS = 20e6  # larger nets take the same export path; their ONNX files are 100-500 MB


@pytest.mark.parametrize("name", rz.list_nets())
def test_every_shipped_net_exports_to_onnx_and_matches_onnxruntime(name, tmp_path):
    net = rz.load_net(name)
    with torch.device("meta"):
        n = sum(p.numel() for p in rz.build_model(net, 10, deployed=True).parameters())
    if n > EXPORT_MAX_PARAMS:
        pytest.skip(f"{name}: {n / 1e6:.0f}M deployed parameters, too large to export on every CI run")
    torch.manual_seed(0)
    model = rz.randomize_norms(rz.build_model(net, 10, block="dbb" if net.input_size <= 32 else "repvgg"))
    report = export_onnx(model, (1, 3, net.input_size, net.input_size), tmp_path / f"{name}.onnx")
    assert "BatchNormalization" not in report.ops and "Add" not in report.ops
    assert report.ops["Conv"] == sum(isinstance(m, rz.RepBlock) for m in model.modules())
    assert report.max_rel <= 1e-6, report


def test_folded_model_goes_through_torch_export_and_torchscript():
    model = rz.randomize_norms(rz.build_model("tiny_vgg", 10, block="acb")).eval()
    folded = rz.fold_model(model).eval()
    x = torch.randn(2, 3, 16, 16)
    exported = torch.export.export(folded, (x,))
    scripted = torch.jit.script(folded)
    with torch.no_grad():
        want = folded(x)
        assert torch.allclose(exported.module()(x), want, atol=1e-6)
        assert torch.allclose(scripted(x), want, atol=1e-6)
