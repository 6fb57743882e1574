"""Independent reference blocks, written from the papers' equations.

Plain ``nn.Conv2d`` / ``nn.BatchNorm2d`` and arithmetic, padding the way the papers'
code pads; nothing here imports reparam_zoo. ``tests/engine/test_reference.py`` copies their
weights into the spec-built blocks and checks parameter counts, training- and
eval-mode outputs and the folded conv.
"""
