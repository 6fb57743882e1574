"""Blocks in d spatial dimensions, Linear blocks (dims=0) and transposed blocks.

* every shipped spec in 1-D, 2-D and 3-D (dense, stride 2 with a channel change, depthwise) and as a
  Linear layer folds into ONE layer of the right class within float64 1e-12 of its training form (random
  BatchNorm statistics, eval mode, tiny/odd/even sizes per axis), or is refused at build with a SpecError;
  which of the two is recorded in tables below, so that a silent change of either side fails;
* an independent check of the d-dimensional engine: a 1-D block is the 2-D block of the same spec on
  [1, k] kernels over height-1 inputs (weights copied across), outputs and folded kernels;
* hand-computed folds with plain torch (never ``reparam_zoo.engine.kernels``): the 3-D ACB's cube, transposed
  RepVGG blocks against hand-built ``nn.ConvTranspose{d}d`` branches, Linear blocks against matrix products.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import reparam_zoo as rz
from reparam_zoo import SpecError
from reparam_zoo.engine.verify import randomize_norms, relative_error

TOL = 1e-12  # float64 fold tolerance (TOLERANCES["fold/float64"])
CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
CONV_T = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
# name -> (in_channels, out_channels, stride, groups)
GEOMETRIES = {"dense": (8, 8, 1, 1), "stride2": (8, 16, 2, 1), "depthwise": (8, 8, 1, 8)}
# input sizes per axis: tiny (1, 2), odd, even and mixed; every block of the tables accepts all of them
SIZES = {1: [(1,), (2,), (7,), (8,), (13,)],
         2: [(1, 1), (1, 2), (2, 3), (7, 8), (8, 7)],
         3: [(1, 1, 1), (2, 1, 3), (3, 4, 2), (5, 6, 7)]}

# ---------------------------------------------------------------------------------------- refusal tables
# (spec, dims) -> the rule every geometry of that spec is refused with; a pair not listed must fold in all three
REFUSED = {
    ("acb", 1): "1xk is a 2-D branch and this block has dims=1",
    ("acb", 3): "1xk is a 2-D branch and this block has dims=3",
    ("doconv", 3): "a basis-parameterised conv needs a depth multiplier >= prod(kernel) = 27, got 9",
}
# spec -> the rule dims=0 (Linear) refuses it with; a spec not listed must fold into one nn.Linear
LINEAR_REFUSED = {
    "acb": "1xk is a 2-D branch and this block has dims=0",
    "acb_nd": "a line kernel needs a window and a Linear block (dims=0) has none",
    "dbb": "average pooling needs a window and a Linear block (dims=0) has none",
    "diracnet": "covers a 3 window, but a Linear block (dims=0) has no window",
    "doconv": "covers a 3 window, but a Linear block (dims=0) has no window",
    "expandnet": "covers a 3 window, but a Linear block (dims=0) has no window",
    "expandnet_ck": "covers a 5 window, but a Linear block (dims=0) has no window",
    "orepa": "average pooling needs a window and a Linear block (dims=0) has none",
    "replknet": "covers a 5 window, but a Linear block (dims=0) has no window",
    "unireplknet": "covers a 5 window, but a Linear block (dims=0) has no window",
}
ONE_CONV = "may hold one conv or pooling step"
# (spec, dims) -> the rule a transposed block of that spec is refused with (every geometry)
TRANSPOSED_REFUSED = {
    **{("acb", d): f"1xk is a 2-D branch and this block has dims={d}" for d in (1, 3)},
    **{(name, d): ONE_CONV for name in ("dbb", "expandnet", "expandnet_ck", "expandnet_fc") for d in (1, 2, 3)},
    **{("diracnet", d): "param: normalized has no form for a transposed block" for d in (1, 2, 3)},
    **{("doconv", d): "param: basis has no form for a transposed block" for d in (1, 2, 3)},
    **{("orepa", d): "param: identity has no form for a transposed block" for d in (1, 2, 3)},
}


@pytest.fixture(autouse=True)
def _one_thread():
    """Small tensors: threads only add overhead (and the CI machine has two cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_tables_name_shipped_specs_only():
    shipped = set(rz.list_specs())
    assert {n for n, _ in REFUSED} | set(LINEAR_REFUSED) | {n for n, _ in TRANSPOSED_REFUSED} <= shipped
    assert {"acb_nd", "expandnet_fc"} <= shipped


def _layer(folded: nn.Module) -> nn.Module:
    """The one layer of a folded block, checking that nothing else but an activation is left."""
    layer = folded.conv if isinstance(folded, nn.Sequential) else folded
    if isinstance(folded, nn.Sequential):
        assert list(folded._modules) == ["conv", "act"]
        assert not any(True for _ in folded.act.parameters())
    assert [n for n, _ in layer.named_parameters()] == ["weight", "bias"]
    return layer


def _check_fold(block: rz.RepBlock, shapes, cls: type, seed: int = 0) -> int:
    """Random norms, eval mode: fold into ONE ``cls``, compare on every shape. Returns how many compared."""
    block = block.double()
    randomize_norms(block, seed)
    block.eval()
    folded = rz.fold_model(block).eval()
    layer = _layer(folded)
    assert type(layer) is cls, (type(layer), cls)
    g = block.geometry
    weight, bias = block.equivalent_kernel()
    assert relative_error(layer.weight, weight) <= TOL and relative_error(layer.bias, bias) <= TOL
    gen = torch.Generator().manual_seed(seed + 1)
    for shape in shapes:
        x = torch.randn(shape, generator=gen, dtype=torch.float64)
        with torch.no_grad():
            want, got = block(x), folded(x)
        if g.transposed:  # torch's ConvTranspose output size
            assert tuple(want.shape[2:]) == tuple((n - 1) * s - 2 * p + w + q for n, s, p, w, q in
                                                  zip(shape[2:], g.stride, g.padding, g.window, g.output_padding))
        elif g.dims:
            assert tuple(want.shape[2:]) == tuple((n + 2 * p - w) // s + 1 for n, w, p, s in
                                                  zip(shape[2:], g.window, g.padding, g.stride)), shape
        assert want.abs().max() > 0, shape  # a zero output would compare trivially
        rel = relative_error(got, want)
        assert rel <= TOL, f"{block.spec.name} dims={g.dims} {shape}: relative error {rel:.2e}"
    return len(shapes)


def _build(*args, **kw):
    """``rz.build_block(*args, **kw)``, or the SpecError it raised (on one line)."""
    try:
        return rz.build_block(*args, **kw)
    except SpecError as exc:
        assert "\n" not in str(exc)
        return exc


# ------------------------------------------------------------------------------- 1. every shipped spec
@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("name", rz.list_specs())
def test_shipped_spec_folds_in_d_dimensions_or_is_refused_as_recorded(name, dims):
    outcomes = {}
    for geo, (cin, cout, stride, groups) in GEOMETRIES.items():
        block = _build(name, cin, cout, stride=stride, groups=groups, dims=dims)
        if isinstance(block, SpecError):
            outcomes[geo] = block.rule
            continue
        assert len(block.geometry.kernel) == dims
        compared = _check_fold(block, [(2, cin, *s) for s in SIZES[dims]], CONV[dims], seed=stride + groups)
        outcomes[geo] = f"folded {compared}"
    expected = REFUSED.get((name, dims))
    _assert_outcomes(outcomes, expected)


def _assert_outcomes(outcomes: dict, expected: str | None) -> None:
    """Every geometry folded (``expected`` None) or every one was refused with ``expected`` in its rule."""
    if expected is None:
        assert all(o.startswith("folded") for o in outcomes.values()), outcomes
    else:
        assert all(expected in o for o in outcomes.values()), outcomes


@pytest.mark.parametrize("name", rz.list_specs())
def test_shipped_spec_as_a_linear_layer_folds_to_one_linear_or_is_refused_as_recorded(name):
    outcomes = []
    for cin, cout in ((8, 8), (8, 16)):
        block = _build(name, cin, cout, dims=0)
        if isinstance(block, SpecError):
            outcomes.append(block.rule)
            continue
        assert block.geometry.dims == 0
        _check_fold(block, [(5, cin), (1, cin)], nn.Linear, seed=cout)
        layer = _layer(rz.fold_model(block))
        assert tuple(layer.weight.shape) == (cout, cin) and block.equivalent_kernel()[0].shape == (cout, cin)
        outcomes.append("folded")
    expected = LINEAR_REFUSED.get(name)
    if expected is None:
        assert outcomes == ["folded", "folded"], outcomes
    else:
        assert all(expected in o for o in outcomes), outcomes


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("name", rz.list_specs())
def test_shipped_spec_transposed_folds_or_is_refused_as_recorded(name, dims):
    outcomes = {}
    for geo, (cin, cout, stride, groups) in GEOMETRIES.items():
        torch.manual_seed(7)
        block = _build(name, cin, cout, stride=stride, groups=groups, dims=dims, transposed=True,
                       output_padding=stride - 1)
        if isinstance(block, SpecError):
            outcomes[geo] = block.rule
            continue
        compared = _check_fold(block, [(2, cin, *s) for s in SIZES[dims]], CONV_T[dims], seed=groups)
        outcomes[geo] = f"folded {compared}"
    expected = TRANSPOSED_REFUSED.get((name, dims))
    _assert_outcomes(outcomes, expected)


def test_linear_blocks_refuse_stride_groups_and_transposed():
    for kw in ({"stride": 2}, {"groups": 2}, {"transposed": True}):
        with pytest.raises(SpecError, match="Linear block"):
            rz.build_block("repvgg", 4, 4, dims=0, **kw)
    block = rz.build_block("repvgg", 4, 4, dims=0)
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        block(torch.randn(2, 4, 3))


@pytest.mark.parametrize("dims", [4, -1, True, "2", 2.0, 1.0, None])
def test_dims_outside_0_to_3_is_a_spec_error(dims):
    with pytest.raises(SpecError, match="dims"):
        rz.build_block("repvgg", 4, 4, dims=dims)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_a_kernel_list_of_the_wrong_length_is_a_spec_error_naming_the_key(dims):
    wrong = [3] * (dims % 3 + 1)  # 2 entries in 1-D, 3 in 2-D, 1 in 3-D
    with pytest.raises(SpecError) as exc:
        rz.build_block({"name": "w", "kernel": wrong, "branches": [{"type": "kxk"}]}, 4, 4, dims=dims)
    assert "kernel" in str(exc.value)
    with pytest.raises(SpecError) as exc:
        rz.build_block({"name": "w", "kernel": 3, "branches": [{"type": "kxk"}, {"type": "conv", "kernel": wrong}]},
                       4, 4, dims=dims)
    assert exc.value.location.startswith("branches.1") and "kernel" in exc.value.location
    with pytest.raises(SpecError, match="axis"):  # a line along an axis the block does not have
        rz.build_block({"name": "w", "kernel": 3, "branches": [{"type": "line", "axis": dims}]}, 4, 4, dims=dims)


# ------------------------------------------------------------------------- 2. 1-D = 2-D on [1, k] kernels
def _as_2d(data: dict) -> dict:
    """A 1-D spec as the same spec in 2-D with [1, k] kernels: every per-axis value gets a height entry of 1
    (0 for paddings), and a line along the 1-D axis (or `all` of them) is the line along the width."""
    def widen(v, one=1):
        return [one, v if isinstance(v, int) else v[0]]

    out = copy.deepcopy(data)
    for key in ("kernel", "dilation"):
        if key in out:
            out[key] = widen(out[key])
    if isinstance(out.get("padding"), (int, list)):
        out["padding"] = widen(out["padding"], 0)
    for b in out["branches"]:
        for part in (b, *b.get("steps", ())):
            for key in ("kernel", "dilation"):
                if part.get(key) is not None:
                    part[key] = widen(part[key])
        if b["type"] == "line":
            b["axis"] = 1
    return out


def _one_d_specs():
    return [n for n in rz.list_specs() if n != "acb"]  # acb's 1xk/kx1 are 2-D only


@pytest.mark.parametrize("transposed", [False, True], ids=["conv", "transposed"])
@pytest.mark.parametrize("name", _one_d_specs())
def test_a_1d_block_is_the_2d_block_on_1_by_k_kernels(name, transposed):
    data = rz.get_spec(name).model_dump(mode="json", exclude_unset=True)
    compared = 0
    for geo, (cin, cout, stride, groups) in GEOMETRIES.items():
        op = stride - 1 if transposed else 0
        torch.manual_seed(1)
        b1 = _build(data, cin, cout, stride=stride, groups=groups, dims=1, transposed=transposed, output_padding=op)
        b2 = _build(_as_2d(data), cin, cout, stride=(1, stride), groups=groups, dims=2, transposed=transposed,
                    output_padding=(0, op))
        assert isinstance(b1, SpecError) == isinstance(b2, SpecError), (geo, b1, b2)
        if isinstance(b1, SpecError):
            assert b1.location == b2.location
            continue
        b1, b2 = b1.double(), b2.double()
        randomize_norms(b1, seed=stride + groups)
        s1, s2 = b1.state_dict(), b2.state_dict()
        assert list(s1) == list(s2)
        assert all(s1[k].numel() == s2[k].numel() for k in s1)
        b2.load_state_dict({k: s1[k].reshape(s2[k].shape) for k in s1})
        gen = torch.Generator().manual_seed(stride)
        for mode in ("eval", "train"):  # train: the BatchNorms' batch statistics over (N, L) = over (N, 1, L)
            b1.train(mode == "train")
            b2.train(mode == "train")
            for (n,) in SIZES[1]:
                x = torch.randn(3, cin, n, generator=gen, dtype=torch.float64)
                with torch.no_grad():
                    y1, y2 = b1(x), b2(x.unsqueeze(2))
                assert y2.shape[2] == 1
                assert relative_error(y2.squeeze(2), y1) <= TOL, (geo, mode, n)
                compared += 1
        for k in s1:  # the training steps moved both blocks' statistics alike
            assert relative_error(b2.state_dict()[k].reshape(s1[k].shape), b1.state_dict()[k]) <= TOL, k
        b1.eval()
        b2.eval()
        (w1, c1), (w2, c2) = b1.equivalent_kernel(), b2.equivalent_kernel()
        assert w2.shape[2] == 1 and w2.dim() == 4
        assert relative_error(w2.squeeze(2), w1) <= TOL and relative_error(c2, c1) <= TOL
        l1, l2 = _layer(rz.fold_model(b1)), _layer(rz.fold_model(b2))
        assert type(l1) is (CONV_T if transposed else CONV)[1] and type(l2) is (CONV_T if transposed else CONV)[2]
        assert relative_error(l2.weight.squeeze(2), l1.weight) <= TOL and relative_error(l2.bias, l1.bias) <= TOL
    assert bool(compared) == ((name, 1) not in (TRANSPOSED_REFUSED if transposed else REFUSED))  # or both refused


# --------------------------------------------------------------------------- 3. the 3-D ACB, by hand
@pytest.mark.parametrize("cout,stride,groups", [(4, 1, 1), (8, 2, 2), (4, 1, 4)])
def test_acb_3d_folds_to_the_hand_computed_cube(cout, stride, groups):
    cin = 4
    block = rz.build_block("acb_nd", cin, cout, stride=stride, groups=groups, dims=3).double()
    randomize_norms(block, seed=cout + stride)
    block.eval()
    cube = torch.zeros(cout, cin // groups, 3, 3, 3, dtype=torch.float64)
    bias = torch.zeros(cout, dtype=torch.float64)
    shapes = []
    with torch.no_grad():
        for chain in block.branches:
            conv, bn = chain
            assert type(conv) is nn.Conv3d and type(bn) is nn.BatchNorm3d and conv.bias is None
            assert conv.groups == groups and conv.stride == (stride,) * 3
            shapes.append(tuple(conv.kernel_size))
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            where = tuple(slice(None) if k == 3 else slice(1, 2) for k in conv.kernel_size)  # centred
            cube[(slice(None), slice(None), *where)] += conv.weight * scale.reshape(-1, 1, 1, 1, 1)
            bias += bn.bias - bn.running_mean * scale
    assert sorted(shapes) == [(1, 1, 3), (1, 3, 1), (3, 1, 1), (3, 3, 3)]  # the cube and three axis lines
    weight, b = block.equivalent_kernel()
    assert relative_error(weight, cube) <= TOL and relative_error(b, bias) <= TOL
    folded = rz.fold_model(block).eval()
    layer = _layer(folded)
    assert type(layer) is nn.Conv3d and layer.padding == (1, 1, 1) and layer.stride == (stride,) * 3
    assert relative_error(layer.weight, cube) <= TOL and relative_error(layer.bias, bias) <= TOL
    for size in SIZES[3]:
        x = torch.randn(2, cin, *size, dtype=torch.float64)
        with torch.no_grad():
            want = F.relu(F.conv3d(x, cube, bias, stride, 1, 1, groups))
            assert relative_error(block(x), want) <= TOL and relative_error(folded(x), want) <= TOL


# --------------------------------------------------------------------------- 4. transposed RepVGG
def _identity_t(channels: int, groups: int, dims: int) -> nn.Module:
    """The identity as a hand-built 1x..x1 transposed conv (layout (C_in, C_out/g, 1, ...))."""
    m = CONV_T[dims](channels, channels, 1, groups=groups, bias=False).double()
    with torch.no_grad():
        m.weight.zero_()
        for i in range(channels):
            m.weight[(i, i % (channels // groups)) + (0,) * dims] = 1.0
    return m


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("stride,output_padding,cout,groups",
                         [(1, 0, 4, 1), (1, 0, 4, 2), (2, 1, 6, 1), (2, 1, 6, 2)])
def test_transposed_repvgg_folds_to_one_conv_transpose_equal_to_hand_built_branches(dims, stride, output_padding,
                                                                                   cout, groups):
    cin, k, p = 4, 3, 1
    block = rz.build_block("repvgg", cin, cout, stride=stride, groups=groups, dims=dims, transposed=True,
                           output_padding=output_padding).double()
    randomize_norms(block, seed=dims + stride)
    block.eval()
    assert len(block.branches) == (3 if stride == 1 else 2)  # the identity only where stride 1 and in == out
    refs = []  # (hand-built transposed conv, the branch's BatchNorm)
    kernel = torch.zeros(cin, cout // groups, *(k,) * dims, dtype=torch.float64)
    bias = torch.zeros(cout, dtype=torch.float64)
    with torch.no_grad():
        for chain in block.branches:
            conv, bn = chain
            if type(conv) is nn.Identity:
                ref = _identity_t(cin, groups, dims)
            else:
                assert type(conv) is CONV_T[dims] and conv.bias is None
                size = conv.kernel_size[0]
                offset = (k - size) // 2
                ref = CONV_T[dims](cin, cout, size, stride=stride, padding=p - offset, output_padding=output_padding,
                                   groups=groups, bias=False).double()
                ref.weight.copy_(conv.weight)
            refs.append((ref, bn))
            # the folded kernel by hand: ConvTranspose layout (C_in, C_out/g, *k); output channel of w[i, j]
            # is (i // (C_in/g)) * (C_out/g) + j; the smaller kernel centred in the k^d window
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            idx = torch.arange(cin)[:, None] // (cin // groups) * (cout // groups) + torch.arange(cout // groups)
            w = ref.weight * scale[idx].reshape(cin, cout // groups, *(1,) * dims)
            o = (k - ref.kernel_size[0]) // 2
            kernel[(slice(None), slice(None), *(slice(o, k - o),) * dims)] += w
            bias += bn.bias - bn.running_mean * scale
    folded = rz.fold_model(block).eval()
    layer = _layer(folded)
    assert type(layer) is CONV_T[dims]
    assert (layer.stride, layer.padding, layer.output_padding, layer.groups) == (
        (stride,) * dims, (p,) * dims, (output_padding,) * dims, groups)
    assert relative_error(layer.weight, kernel) <= TOL and relative_error(layer.bias, bias) <= TOL
    assert relative_error(block.equivalent_kernel()[0], kernel) <= TOL
    for size in SIZES[dims]:
        x = torch.randn(2, cin, *size, dtype=torch.float64)
        with torch.no_grad():
            want = F.relu(sum(bn(ref(x)) for ref, bn in refs))
            got, y = folded(x), block(x)
        assert tuple(want.shape[2:]) == tuple((n - 1) * stride + output_padding + 1 for n in size)
        assert relative_error(y, want) <= TOL and relative_error(got, want) <= TOL, size


def test_transposed_identity_with_stride_2_is_refused_unless_optional():
    spec = {"name": "t", "kernel": 3, "branches": [{"type": "kxk"}, {"type": "identity"}]}
    rz.build_block(spec, 4, 4, transposed=True)  # stride 1: fine
    with pytest.raises(SpecError, match="identity needs stride 1") as exc:
        rz.build_block(spec, 4, 4, stride=2, transposed=True, output_padding=1)
    assert exc.value.location == "branches.1"
    spec["branches"][1]["optional"] = True
    assert len(rz.build_block(spec, 4, 4, stride=2, transposed=True, output_padding=1).branches) == 1


@pytest.mark.parametrize("branch,rule", [
    ({"type": "1x1_kxk"}, ONE_CONV),
    ({"type": "1x1_kxk", "mid_norm": "none"}, ONE_CONV),
    ({"type": "avgpool", "pre_1x1": True}, ONE_CONV),
    ({"type": "seq", "steps": [{"type": "bn"}, {"type": "conv", "kernel": 3}]},
     "NormStep before the conv of a transposed block.s branch may add a constant"),
    ({"type": "seq", "steps": [{"type": "conv", "kernel": 3, "param": "basis", "groups": "depthwise",
                                "multiplier": 9, "out_channels": "in"}, {"type": "conv", "kernel": 1}]},
     "param: basis has no form"),
    ({"type": "seq", "steps": [{"type": "conv", "kernel": 1, "param": "identity", "out_channels": "in"}]},
     "param: identity has no form"),
    ({"type": "seq", "steps": [{"type": "conv", "kernel": 3, "param": "normalized"}]}, "param: normalized has no form"),
])
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_transposed_blocks_refuse_what_has_no_transposed_form(branch, rule, dims):
    spec = {"name": "t", "kernel": 3, "branches": [{"type": "kxk"}, branch]}
    with pytest.raises(SpecError, match=rule) as exc:
        rz.build_block(spec, 4, 4, dims=dims, transposed=True)
    assert exc.value.location.startswith("branches.1")


@pytest.mark.parametrize("kw,rule", [
    ({"transposed": True, "padding_mode": "reflect"}, "pads with zeros only"),
    ({"transposed": True, "stride": 2, "output_padding": 2}, "output_padding"),
    ({"transposed": True, "output_padding": 1}, "output_padding"),  # stride 1, dilation 1
    ({"output_padding": 1}, "transposed blocks only"),
])
def test_transposed_geometry_rules(kw, rule):
    kw = dict(kw)
    spec = {"name": "t", "kernel": 3, "padding_mode": kw.pop("padding_mode", "zeros"), "branches": [{"type": "kxk"}]}
    with pytest.raises(SpecError, match=rule):
        rz.build_block(spec, 4, 4, **kw)


# --------------------------------------------------------------------------- 5. Linear blocks by hand
def _bn_affine(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


@pytest.mark.parametrize("m,n", [(6, 6), (6, 10), (5, 3)])
def test_expandnet_fc_chain_folds_to_one_linear_equal_to_the_matrix_product(m, n):
    block = rz.build_block("expandnet_fc", m, n, dims=0).double()
    randomize_norms(block, seed=m * n)
    block.eval()
    (chain,) = block.branches
    c1, c2, c3, bn = chain
    assert [tuple(c.weight.shape) for c in (c1, c2, c3)] == [(4 * m, m, 1), (4 * n, 4 * m, 1), (n, 4 * n, 1)]
    assert all(c.bias is None for c in (c1, c2, c3))
    with torch.no_grad():
        w1, w2, w3 = (c.weight[..., 0] for c in (c1, c2, c3))
        scale, shift = _bn_affine(bn)
        weight = scale[:, None] * (w3 @ w2 @ w1)  # m -> 4m -> 4n -> n, then the BN
        x = torch.randn(7, m, dtype=torch.float64)
        chain_out = F.relu(((x @ w1.T) @ w2.T) @ w3.T * scale + shift)  # the three layers in turn
        folded = rz.fold_model(block).eval()
        layer = _layer(folded)
        assert type(layer) is nn.Linear and tuple(layer.weight.shape) == (n, m)
        assert relative_error(layer.weight, weight) <= TOL and relative_error(layer.bias, shift) <= TOL
        assert relative_error(block.equivalent_kernel()[0], weight) <= TOL
        want = F.relu(x @ weight.T + shift)
        assert relative_error(chain_out, want) <= TOL
        assert relative_error(block(x), want) <= TOL and relative_error(folded(x), want) <= TOL


@pytest.mark.parametrize("cout", [8, 12])
def test_repvgg_linear_is_a_sum_of_matrices_and_the_identity(cout):
    cin = 8
    block = rz.build_block("repvgg", cin, cout, dims=0).double()
    randomize_norms(block, seed=cout)
    block.eval()
    assert len(block.branches) == (3 if cout == cin else 2)
    weight = torch.zeros(cout, cin, dtype=torch.float64)
    bias = torch.zeros(cout, dtype=torch.float64)
    with torch.no_grad():
        for chain in block.branches:
            first, bn = chain
            scale, shift = _bn_affine(bn)
            if type(first) is nn.Identity:
                matrix = torch.eye(cin, dtype=torch.float64)
            else:
                assert type(first) is nn.Conv1d and tuple(first.weight.shape) == (cout, cin, 1)
                matrix = first.weight[..., 0]
            weight += scale[:, None] * matrix
            bias += shift
        folded = rz.fold_model(block).eval()
        layer = _layer(folded)
        assert type(layer) is nn.Linear
        assert relative_error(layer.weight, weight) <= TOL and relative_error(layer.bias, bias) <= TOL
        x = torch.randn(9, cin, dtype=torch.float64)
        want = F.relu(x @ weight.T + bias)
        assert relative_error(block(x), want) <= TOL and relative_error(folded(x), want) <= TOL




_OWN_MODULE = """
from typing import Literal
import torch
from torch import nn
import reparam_zoo as rz
from reparam_zoo.engine.branches.kxk import KxKBranch
from reparam_zoo.engine.steps import chain_kernel
from reparam_zoo.engine.verify import relative_error

class Doubled(nn.Sequential):
    def forward(self, x):
        return 2 * super().forward(x)

def converter(m, block):
    k = chain_kernel(list(m), block.in_channels, dims=block.axes)
    k.weight = 2 * k.weight
    return k

class DoubledBranch(KxKBranch):
    type: Literal["doubled"] = "doubled"

rz.register_branch("doubled", module=lambda spec, plan, g: Doubled(*[s.build() for s in plan]),
                   converter=converter)(DoubledBranch)
spec = {"name": "d", "act": "identity", "branches": [{"type": "doubled", "norm": "none"}]}
block = rz.build_block(spec, 4, 4).double().eval()
x = torch.randn(2, 4, 7, 7, dtype=torch.float64)
assert relative_error(rz.fold_model(block)(x), block(x)) <= 1e-12  # the ordinary block folds exactly
try:
    rz.build_block(spec, 4, 4, transposed=True)
except rz.SpecError as exc:
    print(exc)
"""


def test_a_branch_type_with_its_own_module_is_refused_in_a_transposed_block():
    """A transposed block runs each branch's steps itself (unpadded, then cropped): a registered branch
    module's own forward would be bypassed while the fold used its converter, so it is refused (in a
    subprocess: the branch type stays out of this process's registry)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _OWN_MODULE], capture_output=True, text=True, check=False,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("branches.0: a transposed block runs each branch's steps itself"), out.stdout
    assert "builds a Doubled, not a chain of linear steps" in out.stdout
