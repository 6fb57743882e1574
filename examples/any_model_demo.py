"""The measured snippets of docs/any_model.md: adopt timm mobileone_s1, expand torchvision resnet50 with dbb and fold back.

    python examples/any_model_demo.py

Random weights with randomised BatchNorm statistics (nothing is downloaded); needs torchvision and timm.
"""
import copy
import time

import timm
import torch
import torchvision
import reparam_zoo as rz
from timm.utils.model import reparameterize_model

torch.manual_seed(0)
model = timm.create_model("mobileone_s1", num_classes=10).eval()
rz.randomize_norms(model, seed=1)
t = time.perf_counter(); adopted, report = rz.adopt(model); t = time.perf_counter() - t
print(report); print(f"adopt took {t:.2f} s")
x = torch.randn(2, 3, 128, 128)
with torch.no_grad():
    ref = model(x)
    print("adopted vs timm (float32):", ((adopted(x) - ref).abs().max() / ref.abs().max()).item())
    ours = rz.fold_model(adopted)(x)
    theirs = reparameterize_model(copy.deepcopy(model))(x)
    print("vs the unfolded net: fold_model", ((ours - ref).abs().max() / ref.abs().max()).item(), "timm reparameterize_model", ((theirs - ref).abs().max() / ref.abs().max()).item())

net = torchvision.models.resnet50(weights=None).eval()
rz.randomize_norms(net, seed=2)
expanded, report = rz.expand(net, "dbb")
print(report)
x = torch.randn(2, 3, 224, 224)
with torch.no_grad():
    a, b = net(x), expanded(x)
    print("expanded == original (eval, float32):", ((a - b).abs().max() / a.abs().max()).item())
folded = rz.fold_model(expanded, layout="original")
fresh = torchvision.models.resnet50(weights=None).eval()
print(fresh.load_state_dict(folded.state_dict(), strict=True))
with torch.no_grad():
    print("fresh resnet50 with the fold == expanded:", ((fresh(x) - b).abs().max() / b.abs().max()).item())
print("parameters:", sum(p.numel() for p in net.parameters()), "->", sum(p.numel() for p in expanded.parameters()))
