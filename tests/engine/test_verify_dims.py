"""verify, the MAC count and `reparam-zoo check` in every dimension: 1-D, 3-D, Linear (dims=0) and transposed
blocks are checked on inputs sized to their window on every axis, a broken fold of any of them fails, and
their MACs are the hand count."""

import json

import pytest
import torch
from torch import nn

import reparam_zoo as rz
from reparam_zoo.cli.app import main
from reparam_zoo.engine import verify as verify_module
from reparam_zoo.engine.block import RepBlock, deployed_layer
from reparam_zoo.engine.cost import count_macs, train_deploy_costs
from reparam_zoo.engine.verify import border_shapes, check_size, verify

#: (spec, dims, transposed, stride, in, out): one of each kind of block the engine folds
BLOCKS = [
    ("repvgg", 1, False, 1, 4, 4),
    ("acb_nd", 1, False, 2, 4, 6),
    ("dbb", 3, False, 1, 3, 3),
    ("acb_nd", 3, False, 2, 3, 4),
    ("repvgg", 0, False, 1, 6, 6),
    ("expandnet_fc", 0, False, 1, 5, 3),
    ("repvgg", 1, True, 2, 4, 4),
    ("acb_nd", 2, True, 2, 3, 4),
    ("repvgg", 3, True, 2, 3, 3),
]
IDS = [f"{s}-{'linear' if d == 0 else f'{d}d'}{'-T' if t else ''}-s{st}" for s, d, t, st, _, _ in BLOCKS]


def _block(spec, dims, transposed, stride, cin, cout):
    torch.manual_seed(0)
    return rz.build_block(spec, cin, cout, dims=dims, transposed=transposed, stride=stride)


def test_border_shapes_2d_are_unchanged_and_the_same_pattern_runs_on_every_axis():
    assert border_shapes((2, 3, 9, 11)) == [(2, 3, 9, 11), (2, 3, 10, 13), (2, 3, 1, 1), (2, 3, 2, 3), (2, 3, 7, 8),
                                            (2, 3, 8, 7)]
    assert border_shapes((2, 3, 11)) == [(2, 3, 11), (2, 3, 12), (2, 3, 1), (2, 3, 2), (2, 3, 7), (2, 3, 8)]
    assert border_shapes((1, 2, 5, 6, 7)) == [(1, 2, 5, 6, 7), (1, 2, 6, 8, 10), (1, 2, 1, 1, 1), (1, 2, 2, 3, 4),
                                              (1, 2, 7, 8, 9), (1, 2, 8, 7, 6)]
    assert border_shapes((4, 8)) == [(4, 8), (1, 8), (64, 8)]  # a Linear block's (N, C): the batch only
    assert border_shapes((2, 3, 7, 8)) == [(2, 3, 7, 8), (2, 3, 8, 10), (2, 3, 1, 1), (2, 3, 2, 3), (2, 3, 8, 7)]


@pytest.mark.parametrize("kernel, dilation", [(3, 1), (7, 1), (31, 1), (3, 3), (5, 2)])
def test_check_size_2d_is_the_old_formula_and_every_axis_covers_the_window(kernel, dilation):
    spec = {"name": "k", "kernel": kernel, "dilation": dilation, "branches": [{"type": "kxk"}]}
    g = rz.build_block(spec, 2, 2).geometry
    (wh, ww), (ph, pw) = g.window, g.padding
    assert check_size(g) == (max(9, wh - 2 * ph + 2, ph + 2), max(11, ww - 2 * pw + 4, pw + 2))
    for dims in (1, 3):
        g = rz.build_block(spec, 2, 2, dims=dims).geometry
        sizes = check_size(g)
        assert len(sizes) == dims
        assert all(s + 2 * p >= w and s >= p + 2 for s, w, p in zip(sizes, g.window, g.padding))
    assert check_size(rz.build_block("repvgg", 2, 2, dims=0).geometry) == ()
    with pytest.raises(ValueError, match="Expected 3 entries in at_least"):
        check_size(rz.build_block("repvgg", 2, 2, dims=3).geometry, (9, 11))


@pytest.mark.parametrize("case", BLOCKS, ids=IDS)
def test_verify_passes_for_blocks_of_every_dimension(case):
    block = _block(*case)
    g = block.geometry
    shape = (2, g.in_channels, *check_size(g))
    for dtype in (torch.float64, torch.float32):
        res = verify(block, shape, dtype=dtype, randomize=True)
        assert res.ok, (case, str(res))
        assert res.shapes[0] == shape and not res.skipped
        # every border size ran, on every axis: the 1-pixel input too; a Linear block, 1 and 64 samples
        tiny = (2, g.in_channels, *[1] * g.axes) if g.dims else (1, g.in_channels)
        assert len(res.shapes) == (6 if g.dims else 3) and tiny in res.shapes
    assert res.max_rel <= verify_module.TOLERANCE[torch.float32]


def _perturbed(kind: str):
    """A fold_model whose result is wrong in one place, in every output channel (a channel that the activation
    zeroes on every input hides anything): the last tap (a corner of the window; a Linear layer's last input),
    the bias, or the kernel mirrored along its last axis (an axis bug)."""
    fold = verify_module.fold_model

    def broken(module, *args, **kwargs):
        out = fold(module, *args, **kwargs)
        w = deployed_layer(out).weight
        with torch.no_grad():
            if kind == "tap":
                corner = (slice(None), -1) if w.dim() == 2 else (slice(None), slice(None), *[-1] * (w.dim() - 2))
                w[corner] += 1e-6 * w.abs().max()
            elif kind == "bias":
                bias = deployed_layer(out).bias
                bias += 1e-6 * bias.abs().max()
            else:
                w.copy_(w.flip(-1))
        return out

    return broken


@pytest.mark.parametrize("kind", ["tap", "bias", "mirrored"])
@pytest.mark.parametrize("case", BLOCKS, ids=IDS)
def test_verify_fails_a_broken_fold_of_every_dimension(case, kind, monkeypatch):
    block = _block(*case)
    g = block.geometry
    if kind == "mirrored" and g.dims == 0:
        pytest.skip("a Linear layer has no spatial axis to mirror")
    shape = (2, g.in_channels, *check_size(g))
    assert verify(block, shape, dtype=torch.float64, randomize=True).ok
    monkeypatch.setattr(verify_module, "fold_model", _perturbed(kind))
    res = verify(block, shape, dtype=torch.float64, randomize=True)
    assert res.shapes and not res.ok and res.max_rel > 1e-9, str(res)
    assert "FAIL" in str(res)


def test_verify_refuses_inputs_of_another_rank_in_one_line():
    with pytest.raises(ValueError, match=r"Expected 5-D input shapes \(N, C, D, H, W\) for the 3-D block 'repvgg' "
                                         r"but got \(2, 4, 9, 11\)"):
        verify(rz.build_block("repvgg", 4, 4, dims=3), (2, 4, 9, 11))
    with pytest.raises(ValueError, match=r"Expected 2-D input shapes \(N, C\)"):
        verify(rz.build_block("repvgg", 4, 4, dims=0), (2, 4, 1))


def test_verify_of_a_net_of_3d_blocks():
    torch.manual_seed(0)
    net = nn.Sequential(rz.build_block("repvgg", 2, 4, dims=3), rz.build_block("dbb", 4, 4, dims=3, stride=2))
    res = verify(net, (2, 2, 5, 6, 7), dtype=torch.float64, randomize=True)
    assert res.ok and len(res.shapes) == 6, str(res)


# ----------------------------------------------------------------------------- MACs by hand


def test_count_macs_of_1d_blocks_is_the_hand_count():
    # repvgg 8 -> 8 on L = 10: kxk 3 taps + 1x1 (the identity is not a MAC), 10 outputs of 8 channels
    block = rz.build_block("repvgg", 8, 8, dims=1).eval()
    assert count_macs(block, (2, 8, 10)) == 10 * 8 * 8 * (3 + 1)
    assert count_macs(rz.fold_model(block), (2, 8, 10)) == 10 * 8 * 8 * 3
    # acb_nd stride 2, 4 -> 6 on L = 10: 5 outputs; kxk and the line along the one axis, 3 taps each
    block = rz.build_block("acb_nd", 4, 6, dims=1, stride=2).eval()
    assert count_macs(block, (1, 4, 10)) == 5 * 6 * 4 * (3 + 3)


def test_count_macs_of_3d_blocks_is_the_hand_count():
    block = rz.build_block("repvgg", 4, 8, dims=3, stride=2).eval()
    out = 3 * 3 * 4  # (5, 6, 7) padded by 1, kernel 3, stride 2
    assert count_macs(block, (1, 4, 5, 6, 7)) == out * 8 * 4 * (27 + 1)
    assert count_macs(rz.fold_model(block), (1, 4, 5, 6, 7)) == out * 8 * 4 * 27
    # dbb 4 -> 4 on 4x5x6 (120 outputs): kxk, 1x1, the 1x1 of 1x1-avg and of 1x1-kxk on the padded
    # 6x7x8 input (336), the 3x3x3 pooling (27 per output), the kxk after the 1x1
    block = rz.build_block("dbb", 4, 4, dims=3).eval()
    assert count_macs(block, (1, 4, 4, 5, 6)) == (120 * 16 * 27) + (120 * 16) + (336 * 16 + 120 * 4 * 27) + \
        (336 * 16 + 120 * 16 * 27)


def test_count_macs_of_linear_blocks_and_heads_is_the_hand_count():
    block = rz.build_block("expandnet_fc", 8, 8, dims=0).eval()  # 8 -> 32 -> 32 -> 8
    assert count_macs(block, (3, 8)) == 8 * 32 + 32 * 32 + 32 * 8
    assert count_macs(rz.fold_model(block), (3, 8)) == 8 * 8
    net = nn.Sequential(rz.build_block("repvgg", 8, 8, dims=0), nn.Linear(8, 3)).eval()
    assert train_deploy_costs(net, rz.fold_model(net), (2, 8)) == {
        "train_params": sum(p.numel() for p in net.parameters()), "deploy_params": 8 * 8 + 8 + 8 * 3 + 3,
        "train_macs": 8 * 8 * 2 + 8 * 3, "deploy_macs": 8 * 8 + 8 * 3}


def test_count_macs_of_transposed_and_online_blocks_is_the_hand_count():
    # a transposed conv multiplies every input by its C_out/g x k taps: kxk and 1x1, 5 inputs of 8 channels
    block = rz.build_block("repvgg", 8, 8, dims=1, transposed=True, stride=2).eval()
    assert count_macs(block, (1, 8, 5)) == 5 * 8 * 8 * (3 + 1)
    assert count_macs(rz.fold_model(block), (1, 8, 5)) == 5 * 8 * 8 * 3
    block = rz.build_block("repvgg", 4, 4, dims=3, transposed=True, groups=2).eval()
    assert count_macs(block, (1, 4, 2, 3, 4)) == 24 * 4 * 2 * (27 + 1)
    # online: the one conv of the block's geometry, every forward (the branches are never run)
    block = RepBlock("repvgg", 8, 8, mode="online", dims=3).eval()
    assert count_macs(block, (1, 8, 4, 5, 6)) == 120 * 8 * 8 * 27
    block = RepBlock("repvgg", 8, 8, mode="online", dims=2).eval()
    assert count_macs(block, (1, 8, 10, 10)) == 100 * 8 * 8 * 9


# ----------------------------------------------------------------------------- reparam-zoo check


@pytest.mark.parametrize("argv, geometry, macs", [
    (["repvgg", "--dims", "3", "--in-channels", "4"],
     "block: 3-D conv, 4 -> 4 channels, kernel 3x3x3, stride 1, dilation 1, groups 1, padding 1 (zeros)",
     "MACs @ 16x16x16"),
    (["acb_nd", "--dims", "1", "--stride", "2", "--in-channels", "4"],
     "block: 1-D conv, 4 -> 4 channels, kernel 3, stride 2, dilation 1, groups 1, padding 1 (zeros)",
     "MACs @ 56: train 2.69k -> deploy 1.34k"),
    (["mobileone", "--dims", "0", "--in-channels", "4", "--out-channels", "8"],
     "block: Linear, 4 -> 8 features (folds into one nn.Linear)", "MACs @ one (N, C) sample: train 160 -> deploy 32"),
    (["repvgg", "--dims", "2", "--transposed", "--stride", "2", "--in-channels", "4", "--size", "8"],
     ("block: 2-D transposed conv, 4 -> 4 channels, kernel 3x3, stride 2, dilation 1, groups 1, padding 1, "
      "output padding 0"), "MACs @ 11x11"),
])
def test_check_prints_the_geometry_of_every_dimension(argv, geometry, macs, capsys):
    assert main(["check", *argv]) == 0
    out = capsys.readouterr().out
    assert f"  {geometry}\n" in out and macs in out and "OK" in out


def test_check_sweeps_linear_blocks_and_lists_the_specs_that_do_not_apply(tmp_path, capsys):
    path = tmp_path / "r.json"
    assert main(["check", "--all", "--dims", "0", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    rows = json.loads(path.read_text())
    assert rows and all(r["ok"] and r["dims"] == 0 and r["stride"] == 1 and r["groups"] == 1 for r in rows)
    assert {"repvgg", "mobileone", "expandnet_fc"} <= {r["spec"] for r in rows}
    assert "fold check, Linear blocks, float64, MACs at one (N, C) sample" in out
    assert "skipped, does not apply: dbb (16->16, stride 1, groups 1): branches.2: average pooling" in out
    # a single spec that does not apply is an error; a sweep where nothing applies too
    assert main(["check", "dbb", "--dims", "0"]) == 2
    assert main(["check", "--all", "--dims", "0", "--transposed"]) == 2
    assert "no shipped spec applies to --dims 0 --transposed" in capsys.readouterr().err
