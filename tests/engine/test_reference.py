"""Each zoo spec IS the paper's block: proven against an independent reference.

For each spec: build the hand-written reference (tests/reference/, no reparam_zoo code)
and the spec-built block, copy the reference's weights into the block through an explicit
key mapping (a strict load: every key of the block is mapped), then check
(a) equal parameter counts, (b) equal training-mode and eval-mode outputs, (c) the folded
conv equals the reference's eval output — over several geometries. float64 throughout.
"""

import copy

import pytest
import torch
from torch import nn

import reparam_zoo as rz

from tests.conftest import assert_close
from tests.reference.acb import RefACB
from tests.reference.dbb import RefDBB
from tests.reference.diracnet import RefDirac
from tests.reference.doconv import RefDOConv
from tests.reference.expandnet import RefExpandCK, RefExpandCL, RefExpandFC
from tests.reference.mobileone import RefMobileOne
from tests.reference.orepa import RefOREPA
from tests.reference.plain import RefPlain
from tests.reference.qarepvgg import RefQARepVGG
from tests.reference.replknet import RefRepLK
from tests.reference.repvgg import RefRepVGG
from tests.reference.unireplknet import RefUniRepLK

BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def load(block, mapping):
    """Strictly load ``{block key: tensor | BatchNorm}`` into ``block``."""
    state = {}
    for key, src in mapping.items():
        if isinstance(src, nn.BatchNorm2d):
            for n in BN_KEYS:
                state[f"{key}.{n}"] = getattr(src, n)
        else:
            state[key] = src
    block.load_state_dict(state, strict=True)


def cbn(prefix, convbn):
    """A ConvBN pair at steps 0 (conv) and 1 (BN) of a branch."""
    return {f"{prefix}.0.weight": convbn.conv.weight, f"{prefix}.1": convbn.bn}


# ----------------------------------------------------------------------------- explicit mappings


def map_repvgg(r):
    m = {**cbn("branches.0", r.dense), **cbn("branches.1", r.one)}
    if r.identity is not None:
        m["branches.2.1"] = r.identity
    return m


def map_acb(r):
    return {**cbn("branches.0", r.square), **cbn("branches.1", r.hor), **cbn("branches.2", r.ver)}


def map_acb_nd(r):  # one line per axis: axis 0 (height, ACNet's vertical kx1) first
    return {**cbn("branches.0", r.square), **cbn("branches.1", r.ver), **cbn("branches.2", r.hor)}


def map_dbb(r):
    m = cbn("branches.0", r.origin)
    if not r.depthwise:
        m.update(cbn("branches.1", r.one))
        m.update({"branches.2.0.weight": r.avg.conv.weight, "branches.2.1": r.avg.bn.bn, "branches.2.3": r.avg.avgbn,
                  "branches.3.0.weight": r.kxk.idconv1.weight, "branches.3.1": r.kxk.bn1.bn,
                  "branches.3.2.weight": r.kxk.conv2.weight, "branches.3.3": r.kxk.bn2})
    else:
        m.update({"branches.1.1": r.avg.avgbn,
                  "branches.2.0.weight": r.kxk.conv1.weight, "branches.2.1": r.kxk.bn1.bn,
                  "branches.2.2.weight": r.kxk.conv2.weight, "branches.2.3": r.kxk.bn2})
    return m


def map_mobileone(r):
    m = {}
    for i, c in enumerate(r.convs):
        m.update(cbn(f"branches.{i}", c))
    m.update(cbn(f"branches.{len(r.convs)}", r.scale))
    if r.skip is not None:
        m[f"branches.{len(r.convs) + 1}.1"] = r.skip
    return m


def map_replknet(r):
    return {**cbn("branches.0", r.lkb_origin), **cbn("branches.1", r.small_conv)}


def map_unireplknet(r):
    m = cbn("branches.0", r.origin)
    for i, d in enumerate(r.dil):
        m.update(cbn(f"branches.{i + 1}", d))
    return m


def map_doconv(r):
    cin, mn, s = r.D.shape
    k = r.k
    cout, cin_g, _ = r.W.shape
    # depthwise weight [i * D_mul + s, 0, m // k, m % k] = D[i, m, s];  1x1 weight [o, i * D_mul + s] = W[o, i, s]
    return {"branches.0.0.weight": r.D.permute(0, 2, 1).reshape(cin * s, 1, k, k),
            "branches.0.1.weight": r.W.reshape(cout, cin_g * s, 1, 1),
            "branches.0.1.bias": r.bias, "norm_after": r.bn}


def map_expand_cl(r):
    return {"branches.0.0.weight": r.c1.weight, "branches.0.1.weight": r.c2.weight,
            "branches.0.2.weight": r.c3.weight, "branches.0.3": r.bn}


def map_expand_ck(r):
    return {"branches.0.0.weight": r.c1.weight, "branches.0.1.weight": r.c2.weight, "branches.0.2": r.bn}


def map_dirac(r):
    if r.has_delta:
        return {"branches.0.1.weight": r.alpha, "branches.1.0.weight": r.W, "branches.1.1.weight": r.beta,
                "norm_after": r.bn}
    return {"branches.0.0.weight": r.W, "branches.0.1.weight": r.beta, "norm_after": r.bn}


def map_qarepvgg(r):
    return {**cbn("branches.0", r.dense), "branches.1.0.weight": r.one.weight, "norm_after": r.bn}


def map_plain(r):
    return cbn("branches.0", r.dense)


def map_orepa(r):
    v = r.vector
    return {"branches.0.0.weight": r.w_origin, "branches.0.1.weight": v[0],
            "branches.1.0.weight": r.w_1x1, "branches.1.1.weight": v[1],
            "branches.2.0.weight": r.w_idconv1, "branches.2.1.weight": r.w_conv2, "branches.2.2.weight": v[2],
            "branches.3.0.weight": r.w_avg, "branches.3.2.weight": v[3], "norm_after": r.bn}


DENSE = [(4, 4, 1, 1), (4, 8, 2, 1), (4, 4, 1, 2)]
CASES = {
    # spec: (reference, mapping, geometries (in, out, stride, groups))
    "repvgg": (RefRepVGG, map_repvgg, DENSE + [(4, 4, 2, 4)]),
    "acb": (RefACB, map_acb, DENSE),
    "dbb": (RefDBB, map_dbb, DENSE + [(4, 4, 1, 4), (4, 4, 2, 4)]),
    "mobileone": (RefMobileOne, map_mobileone, [(4, 4, 1, 4), (4, 4, 2, 4), (4, 8, 1, 1), (4, 4, 1, 1)]),
    "replknet": (RefRepLK, map_replknet, [(4, 4, 1, 4), (4, 4, 2, 4), (4, 8, 1, 1)]),
    "unireplknet": (RefUniRepLK, map_unireplknet, [(4, 4, 1, 4), (4, 4, 2, 4), (4, 4, 1, 1)]),
    "doconv": (RefDOConv, map_doconv, DENSE),
    "expandnet": (RefExpandCL, map_expand_cl, DENSE),
    "expandnet_ck": (RefExpandCK, map_expand_ck, DENSE),
    # in 2-D the FC expansion is the CL expansion of a 1x1 conv (dims=0, a Linear layer: test below)
    "expandnet_fc": (lambda cin, cout, s, g: RefExpandCL(cin, cout, s, g, k=1), map_expand_cl, DENSE),
    "acb_nd": (RefACB, map_acb_nd, DENSE),
    "diracnet": (RefDirac, map_dirac, [(4, 4, 1, 1), (4, 4, 1, 2), (4, 4, 1, 4), (4, 8, 1, 1), (4, 4, 2, 1)]),
    "qarepvgg": (RefQARepVGG, map_qarepvgg, DENSE),
    "orepa": (RefOREPA, map_orepa, DENSE),
    "plain": (RefPlain, map_plain, DENSE + [(4, 4, 1, 4)]),
}


def test_every_shipped_spec_has_a_reference():
    assert set(CASES) == set(rz.list_specs())


def randomize(module, seed=0):
    """Perturb every parameter (zero-initialised ones too) and give every BN random statistics."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g, dtype=torch.float64) * 2 - 1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g, dtype=torch.float64) * 1.75 + 0.25)
    return module


def _params(m):
    return sum(p.numel() for p in m.parameters())


def _pair(name, cin, cout, stride, groups, seed, spec=None, **ref_kw):
    ref_cls, mapping, _ = CASES[name]
    torch.manual_seed(seed)
    ref = randomize(ref_cls(cin, cout, stride, groups, **ref_kw).double(), seed)
    block = rz.build_block(spec or name, cin, cout, stride=stride, groups=groups).double()
    load(block, mapping(ref))
    return ref, block


@pytest.mark.parametrize("name,geometry", [(n, g) for n, (_, _, gs) in CASES.items() for g in gs],
                         ids=lambda v: v if isinstance(v, str) else "-".join(map(str, v)))
def test_spec_is_the_papers_block(name, geometry):
    cin, cout, stride, groups = geometry
    ref, block = _pair(name, cin, cout, stride, groups, seed=sum(geometry))
    # (a) the same parameters
    assert _params(block) == _params(ref)
    x = torch.randn(3, cin, 11, 10, dtype=torch.float64)
    # (b) the same function, eval and training mode (on copies: training updates BN statistics)
    assert_close(ref.eval()(x), block.eval()(x))
    if name != "dbb":  # DBB's training-mode borders: see test_dbb_training_mode below
        r_train, b_train = copy.deepcopy(ref).train(), copy.deepcopy(block).train()
        assert_close(r_train(x), b_train(x))
        assert_close(r_train(x + 1), b_train(x + 1))  # after a statistics update
    # (c) the folded conv is the reference's eval output
    folded = block.fold()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert_close(ref.eval()(x), folded(x))


@pytest.mark.parametrize("geometry", [(4, 4, 1, 1), (4, 8, 2, 2), (4, 4, 1, 4)])
def test_dbb_training_mode(geometry):
    """DBB computes the batch statistics of its 1x1 -> BN steps on the unpadded map and pads
    with running-statistics values; with padding 0 (no ring) training outputs agree exactly."""
    cin, cout, stride, groups = geometry
    spec = rz.get_spec("dbb").model_copy(update={"padding": 0})
    ref, block = _pair("dbb", cin, cout, stride, groups, 7, spec=spec, padding=0)
    x = torch.randn(3, cin, 11, 10, dtype=torch.float64)
    r_train, b_train = ref.train(), block.train()
    assert_close(r_train(x), b_train(x))
    assert_close(r_train(x * 2), b_train(x * 2))
    assert_close(ref.eval()(x), block.fold()(x))


def test_doconv_trains_as_the_composed_kernel_or_the_chain():
    ref, block = _pair("doconv", 4, 6, 1, 1, 3)
    assert type(block.branches[0]).__name__ == "ComposedChain"
    chain_spec = rz.get_spec("doconv")
    chain_spec.branches[0].train_as = "features"
    chain = rz.build_block(chain_spec, 4, 6).double()
    chain.load_state_dict(block.state_dict())
    x = torch.randn(2, 4, 9, 9, dtype=torch.float64)
    for m in (block, chain):
        assert_close(ref(x), m.train()(x))


@pytest.mark.parametrize("cin,cout", [(4, 4), (5, 3), (3, 7)])
def test_expandnet_fc_is_the_papers_fc_expansion(cin, cout):
    """dims=0: three Linear layers and a BatchNorm1d, folded into ONE nn.Linear."""
    torch.manual_seed(cin * cout)
    ref = randomize(RefExpandFC(cin, cout).double(), cin)
    with torch.no_grad():
        for bn in (ref.bn,):  # randomize() gives BatchNorm2d statistics only
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.25, 2)
    block = rz.build_block("expandnet_fc", cin, cout, dims=0).double()
    state = {"branches.0.0.weight": ref.f1.weight[..., None], "branches.0.1.weight": ref.f2.weight[..., None],
             "branches.0.2.weight": ref.f3.weight[..., None]}
    state.update({f"branches.0.3.{n}": getattr(ref.bn, n) for n in BN_KEYS})
    block.load_state_dict(state, strict=True)
    assert _params(block) == _params(ref)
    x = torch.randn(6, cin, dtype=torch.float64)
    assert_close(ref.eval()(x), block.eval()(x))
    r_train, b_train = copy.deepcopy(ref).train(), copy.deepcopy(block).train()
    assert_close(r_train(x), b_train(x))
    assert_close(r_train(x + 1), b_train(x + 1))
    folded = block.fold()
    assert type(folded.conv) is nn.Linear and folded.conv.weight.shape == (cout, cin)
    assert_close(ref.eval()(x), folded(x))
