"""The fold, online training and INT8 export on every device this machine has: the CPU always, CUDA
where present (`benchmarks/gpu.sh` runs this file on the GPU machine before the benchmarks). Kernels
are compared, not conv outputs, so TF32 convolutions on a GPU do not enter the comparison."""

import pytest
import torch

import reparam_zoo as rz
from reparam_zoo.engine.fastfold import fold_blocks

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def _close(w, ref, dtype):
    if dtype == torch.float64:
        return (w - ref).abs().max().item() <= 1e-13 * ref.abs().max().item()
    return bool(((w - ref).abs() <= torch.finfo(dtype).eps * ref.abs()).all())  # equal or one unit apart


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fold_on_the_device_is_the_reference_kernel_and_stays_there(device, dtype):
    torch.manual_seed(0)
    model = rz.randomize_norms(rz.build_model("tiny_vgg", 10, block="dbb")).to(device, dtype).eval()
    blocks = [m for m in model.modules() if isinstance(m, rz.RepBlock)]
    for b, (w, bias) in zip(blocks, fold_blocks(blocks)):
        w_ref, b_ref = b.equivalent_kernel()
        assert w.device.type == device and w.dtype == dtype
        assert _close(w, w_ref.detach(), dtype) and _close(bias, b_ref.detach(), dtype)
    folded = rz.fold_model(model)
    assert {p.device.type for p in folded.parameters()} == {device}
    assert {p.dtype for p in folded.parameters()} == {dtype}


@needs_cuda
def test_fold_on_a_side_stream_equals_the_default_stream():
    """The scratch buffer is per CUDA stream: folds queued on two streams do not share it."""
    torch.manual_seed(0)
    model = rz.randomize_norms(rz.build_model("tiny_vgg", 10, block="repvgg")).cuda().eval()
    blocks = [m for m in model.modules() if isinstance(m, rz.RepBlock)]
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        on_side = fold_blocks(blocks)
    on_default = fold_blocks(blocks)
    torch.cuda.synchronize()
    for (a, ab), (b, bb) in zip(on_side, on_default):
        assert torch.equal(a, b) and torch.equal(ab, bb)


@pytest.mark.parametrize("device", DEVICES)
def test_online_training_step_on_the_device_matches_its_kernel_and_the_cpu(device):
    """An online block's forward is one conv with the composed kernel; its gradients on the device equal
    the CPU's (float64: no TF32)."""
    torch.manual_seed(0)
    block = rz.build_block("repvgg", 8, 8, mode="online").double().train()
    x = torch.randn(4, 8, 10, 10, dtype=torch.float64)
    grads = {}
    for dev in ("cpu", device):
        b = block.to(dev)
        b.zero_grad(set_to_none=True)
        b(x.to(dev)).square().mean().backward()
        grads[dev] = [p.grad.detach().cpu() for p in b.parameters()]
    for a, c in zip(grads["cpu"], grads[device]):
        assert torch.allclose(a, c, rtol=1e-10, atol=1e-12)


@needs_cuda
def test_compiled_online_block_on_cuda_trains_like_eager():
    torch.manual_seed(0)
    block = rz.build_block("repvgg", 16, 16, mode="online").cuda().train()
    compiled = torch.compile(block)
    x = torch.randn(8, 16, 12, 12, device="cuda")
    grads = []
    for m in (block, compiled):
        block.zero_grad(set_to_none=True)
        m(x).square().mean().backward()
        grads.append([p.grad.clone() for p in block.parameters()])
    for a, b in zip(*grads):  # float32 with TF32 convolutions: a loose bound
        assert (a - b).abs().max().item() <= 1e-2 * max(a.abs().max().item(), 1e-12)


@needs_cuda
def test_int8_export_of_a_model_on_cuda(tmp_path):
    pytest.importorskip("onnxruntime")
    from reparam_zoo.interop.quantize import quantize_onnx

    torch.manual_seed(0)
    model = rz.randomize_norms(rz.build_model("tiny_vgg", 10, in_channels=1)).cuda().eval()
    x = torch.randn(32, 1, 16, 16)
    rep = quantize_onnx(model, x[:16], tmp_path / "m.onnx", check=x[16:])
    assert rep.quantized_convs == rep.convs == 5 and next(model.parameters()).is_cuda  # the model stays put


@pytest.mark.parametrize("device", DEVICES)
def test_search_trains_on_the_device_it_is_given(tmp_path, device, capsys):
    """`search --device`: every trial trains there (the row's CUDA peak memory is measured only on CUDA);
    without CUDA, `--device cuda` is one line."""
    pytest.importorskip("optuna")
    import json

    from reparam_zoo.cli.app import main

    args = ["search", "repvgg_acb", "--data", "digits", "--limit", "96", "--holdout", "40", "--epochs", "1",
            "--budget", "1", "--reevaluate", "0", "--latency-runs", "1", "--latency-batch", "2", "--quiet",
            "--out", str(tmp_path / device), "--device", device]
    assert main(args) == 0
    (row,) = json.loads((tmp_path / device / "leaderboard.json").read_text())["rows"]
    assert (row.get("peak_cuda_mb") is not None and row["peak_cuda_mb"] > 0) == (device == "cuda")
    if not torch.cuda.is_available():
        assert main([*args[:-1], "cuda"]) == 2
        assert capsys.readouterr().err.strip().endswith("--device cuda but no CUDA device is available")
