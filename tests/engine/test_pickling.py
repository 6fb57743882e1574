"""Models holding RepBlocks (built, expanded, adopted) survive torch.save / torch.load, copy.deepcopy and a
spawn multiprocessing round trip: the spec class is made at run time (the union of registered branch
types), so a spec pickles by value and is rebuilt with the loading process's registry."""

import copy
import io

import pytest
import torch
import torch.multiprocessing as mp
import torchvision
from torch import nn

import reparam_zoo as rz
from reparam_zoo.engine.verify import randomize_norms
from tests.interop.test_adopt import _upstream


def _built() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(rz.build_block("repvgg", 4, 8, stride=2), rz.build_block("dbb", 8, 8, mode="online"),
                        rz.build_block("acb_nd", 8, 8), rz.build_block("mobileone", 8, 8, groups=8),
                        rz.build_block("repvgg", 8, 4, stride=2, transposed=True, output_padding=1))
    return randomize_norms(net).double().eval()


def _round_trip(model: nn.Module) -> nn.Module:
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


def _outputs(model, x):
    with torch.no_grad():
        return model.eval()(x)


def _in_child(model, x, queue):  # a spawn worker: a fresh interpreter unpickles the model
    queue.put(_outputs(model, x).tolist())  # plain numbers: no shared-memory tensor outliving the worker


def _specs(model):
    return [(m.spec.to_dict(), m.spec.source, type(m.spec)) for m in model.modules() if isinstance(m, rz.RepBlock)]


def test_a_built_net_survives_save_load_and_deepcopy():
    net = _built()
    x = torch.randn(2, 4, 9, 9, dtype=torch.float64)
    for back in (_round_trip(net), copy.deepcopy(net)):
        assert torch.equal(_outputs(back, x), _outputs(net, x))
        assert torch.equal(_outputs(rz.fold_model(back), x), _outputs(rz.fold_model(net), x))
        assert _specs(back) == _specs(net)  # equal specs, the same source files, today's spec class
        assert back[0].spec.source.endswith("repvgg.yaml")


def test_a_spec_alone_pickles_to_an_equal_spec_of_the_current_class():
    import pickle

    spec = rz.get_spec("unireplknet")
    back = pickle.loads(pickle.dumps(spec))
    assert back == spec and type(back) is type(spec) and back.source == spec.source


def _expanded_frozen():  # an expanded model with frozen norms (a spec made at run time: with_frozen_norms)
    from torchvision.ops import Conv2dNormActivation, FrozenBatchNorm2d

    model = nn.Sequential(Conv2dNormActivation(4, 8, 3, norm_layer=FrozenBatchNorm2d), nn.Conv2d(8, 4, 1))
    return rz.expand(rz.randomize_norms(model, seed=1).double(), "dbb")[0], 4


def _adopted():
    block, cin = _upstream("dbb")
    return rz.adopt(nn.Sequential(block))[0].double(), cin


@pytest.mark.parametrize("make", [lambda: (_built(), 4), _expanded_frozen, _adopted],
                         ids=["built", "expanded", "adopted"])
def test_a_model_holding_blocks_crosses_a_spawn_worker(make):
    net, cin = make()
    x = torch.randn(2, cin, 9, 9, dtype=torch.float64)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    worker = ctx.Process(target=_in_child, args=(net, x, queue))
    worker.start()
    got = queue.get(timeout=300)
    worker.join(timeout=60)
    assert worker.exitcode == 0 and torch.equal(torch.tensor(got, dtype=torch.float64), _outputs(net, x))


def test_an_expanded_torchvision_model_survives_save_load_and_folds_back_strictly():
    torch.manual_seed(0)
    expanded, _ = rz.expand(torchvision.models.resnet18(num_classes=10), "acb")
    back = _round_trip(expanded)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(_outputs(back, x), _outputs(expanded, x))
    fresh = torchvision.models.resnet18(num_classes=10).eval()
    fresh.load_state_dict(rz.fold_model(back, layout="original").state_dict(), strict=True)
    assert (fresh(x) - _outputs(expanded, x)).abs().max() <= 1e-4


@pytest.mark.parametrize("name", ["repvgg_se", "dbb", "mobileone_se", "replknet"])
def test_an_adopted_block_survives_save_load_and_folds_into_its_upstream_layout(name):
    block, cin = _upstream(name)
    adopted, _ = rz.adopt(nn.Sequential(block))
    back = _round_trip(adopted)
    x = torch.randn(2, cin, 11, 12, dtype=torch.float64)
    assert torch.equal(_outputs(back, x), _outputs(adopted, x))
    assert rz.fold_model(back, layout="original").state_dict().keys() == \
        rz.fold_model(adopted, layout="original").state_dict().keys()
