"""The fast fold (fastfold.fold_weights, what RepBlock.fold uses) computes what the differentiable
reference (RepBlock.equivalent_kernel) computes: the float64 fold, rounded once to the block's dtype."""

import pytest
import torch

import reparam_zoo as rz
from reparam_zoo.engine.fastfold import CHUNK, fold_weights

GEOMETRIES = [(16, 16, 1, 1), (16, 32, 2, 1), (16, 16, 1, 4), (16, 16, 2, 16), (8, 8, 1, 8)]
EXTRA = {  # what the shipped specs do not cover: block dilation, norm_after, copies, padding modes
    "dilated": {"name": "dilated", "kernel": 3, "dilation": 2, "branches": [
        {"type": "kxk"}, {"type": "conv", "kernel": 1}, {"type": "identity", "optional": True}]},
    "norm_after": {"name": "na", "kernel": 3, "norm_after": {"type": "bn"}, "branches": [
        {"type": "kxk", "count": 2}, {"type": "1xk"}, {"type": "avgpool"}]},
    "reflect": {"name": "rf", "kernel": [3, 5], "padding_mode": "reflect", "branches": [
        {"type": "kxk"}, {"type": "kx1"}, {"type": "identity", "optional": True}]},
    "group": {"name": "grp", "kernel": 3, "branches": [  # composed in float64: the fast fold's generic path
        {"type": "identity", "optional": True, "norm": "none"},
        {"type": "group", "norm": "scale", "factors": [1, 1, -1], "branches": [
            {"type": "kxk"}, {"type": "conv", "kernel": 1}, {"type": "identity", "optional": True}]}]},
}


def _close(w, ref, dtype):
    if dtype == torch.float64:  # the same float64 operations; only the order of additions may differ
        return (w - ref).abs().max().item() <= 1e-14 * ref.abs().max().item() + 1e-300
    # both the float64 fold rounded once: equal, or one unit apart where float64 order tipped a tie
    ulp = torch.finfo(dtype).eps * ref.abs()
    return bool(((w - ref).abs() <= ulp).all())


@pytest.mark.parametrize("name", [*rz.list_specs(), *EXTRA])
def test_fast_fold_equals_the_reference_on_every_spec(name):
    checked = 0
    for ci, co, stride, groups in GEOMETRIES:
        for mode in ("offline", "online"):
            try:
                block = rz.build_block(EXTRA.get(name, name), ci, co, stride=stride, groups=groups, mode=mode)
            except rz.SpecError:
                continue
            torch.manual_seed(ci + co + stride + groups)
            rz.randomize_norms(block)
            for dtype in (torch.float64, torch.float32):
                b = block.to(dtype).eval()
                w_ref, bias_ref = b.equivalent_kernel()
                w, bias = fold_weights(b)
                assert w.dtype == dtype and w.shape == w_ref.shape and not w.requires_grad
                assert _close(w, w_ref.detach(), dtype) and _close(bias, bias_ref.detach(), dtype), (name, mode)
                checked += 1
    assert checked


def test_chunks_cover_every_output_channel_and_fold_returns_fresh_parameters(monkeypatch):
    import reparam_zoo.engine.fastfold as ff

    monkeypatch.setattr(ff, "CHUNK", 7 * 9)  # 7 rows of 1 x 3 x 3 per chunk: a ragged last chunk
    block = rz.randomize_norms(rz.build_block("repvgg", 8, 50, groups=1)).eval().float()
    w, b = ff.fold_weights(block)
    w_ref, b_ref = block.equivalent_kernel()
    assert _close(w, w_ref.detach(), torch.float32) and _close(b, b_ref.detach(), torch.float32)
    folded = block.fold()
    conv = folded.conv
    assert conv.weight.device.type == "cpu" and conv.weight.requires_grad and CHUNK > 0
    before = [p.clone() for p in block.parameters()]
    with torch.no_grad():
        conv.weight.add_(1.0)  # the fold owns its tensors: the block is untouched
    assert all(torch.equal(p, q) for p, q in zip(before, block.parameters()))


def test_a_block_reparameterized_in_place_folds_to_its_own_conv_in_both_layouts():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Conv2d(4, 4, 3, padding=1, bias=False)
            self.a_bn = torch.nn.BatchNorm2d(4)

        def forward(self, x):
            return self.a_bn(self.a(x))

    torch.manual_seed(0)
    expanded, _ = rz.expand(rz.randomize_norms(Net(), seed=1).eval(), "acb")
    rz.randomize_norms(expanded, seed=2).eval()
    x = torch.randn(1, 4, 8, 8)
    want = expanded(x)
    for b in expanded.modules():
        if isinstance(b, rz.RepBlock):
            b.reparameterize()
    for layout in ("plain", "original"):
        got = rz.fold_model(expanded, layout=layout)(x)
        assert torch.allclose(got, want, rtol=0, atol=1e-5 * want.abs().max().item()), layout


def test_the_fold_keeps_a_hooked_activation():
    block = rz.randomize_norms(rz.build_block("repvgg", 4, 4)).eval()
    block.act.register_forward_hook(lambda m, i, o: o * 0 + 7)
    x = torch.randn(1, 4, 6, 6)
    assert torch.equal(block(x), torch.full_like(block(x), 7.0))
    assert torch.equal(block.fold()(x), torch.full_like(block(x), 7.0))
    plain = rz.build_block("repvgg", 4, 4)
    assert type(plain.fold().act) is type(plain.act) and plain.fold().act is not plain.act


def test_a_whole_network_folds_in_one_batch_to_the_same_numbers_without_shared_storage():
    """fold_model folds every block in one batch (all BatchNorm statistics concatenated): the same
    numbers as folding block by block, and every folded tensor owns its storage (a bias must not be a
    view of the batch, or safetensors refuses to save the model and one tensor drags in all)."""
    from reparam_zoo.engine.fastfold import fold_blocks

    torch.manual_seed(0)
    for dtype, block in [(d, b) for d in (torch.float64, torch.float32) for b in ("repvgg", "plain", "dbb")]:
        # plain: one conv -> BN branch, whose bias is that BatchNorm's shift alone
        model = rz.randomize_norms(rz.build_model("tiny_vgg", 10, block=block)).to(dtype).eval()
        blocks = [m for m in model.modules() if isinstance(m, rz.RepBlock)]
        assert len(blocks) >= 3
        together = fold_blocks(blocks)
        for b, (w, bias) in zip(blocks, together):
            w1, bias1 = fold_weights(b)
            assert torch.equal(w, w1) and torch.equal(bias, bias1)
        folded = rz.fold_model(model)
        ptrs = [p.untyped_storage().data_ptr() for p in folded.parameters()]
        assert len(ptrs) == len(set(ptrs))
        for p in folded.parameters():
            assert p.untyped_storage().nbytes() == p.numel() * p.element_size()


def test_one_batch_over_blocks_of_different_dtypes_eps_and_widths():
    """fold_blocks groups BatchNorm statistics by device and dtype and gives each channel its own BN's
    eps: blocks of float32 and float64, BNs with other eps, other widths, folded together."""
    from reparam_zoo.engine.fastfold import fold_blocks

    torch.manual_seed(1)
    blocks = [rz.randomize_norms(rz.build_block("repvgg", 8, 8)).float().eval(),
              rz.randomize_norms(rz.build_block("dbb", 8, 16)).double().eval(),
              rz.randomize_norms(rz.build_block("plain", 4, 12)).float().eval()]
    bns = [m for m in blocks[0].modules() if isinstance(m, torch.nn.BatchNorm2d)]
    bns[1].eps = 0.1
    [m for m in blocks[1].modules() if isinstance(m, torch.nn.BatchNorm2d)][0].eps = 1e-3
    for b, (w, bias) in zip(blocks, fold_blocks(blocks)):
        w_ref, b_ref = b.equivalent_kernel()
        assert w.dtype == w_ref.dtype
        assert _close(w, w_ref.detach(), w.dtype) and _close(bias, b_ref.detach(), w.dtype)
