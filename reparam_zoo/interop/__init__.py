"""The interop room: reparam_zoo and other people's models and files.

- :mod:`~reparam_zoo.interop.adopt`: the adopt engine — any model in, each recognised upstream
  re-parameterized block replaced by an equal RepBlock carrying its weights (its origin folds it back
  into the upstream's deployed form).
- :mod:`~reparam_zoo.interop.checkpoints`: the checkpoint loading engine — safe reading, DDP/compile
  prefixes, key formats mapped strictly or refused with the unmapped and missing keys.
- :mod:`~reparam_zoo.interop.upstream`: one file per upstream (official RepVGG, Apple MobileOne, DBB,
  ACNet, YOLOv6's QARepVGG, OREPA, RepLKNet, timm) holding its adapters and its checkpoint key
  renames, registered into both engines' registries.
- :mod:`~reparam_zoo.interop.expand`: plain ``Conv{1,2,3}d -> BatchNorm{1,2,3}d`` and
  ``Linear -> BatchNorm1d`` pairs of any model become RepBlocks of the matching dims (and fold back
  into the original classes and keys).
- :mod:`~reparam_zoo.interop.user_models`: the user's own models (``file.py:factory``, torchvision,
  timm) and their weights, for the command line.
- :mod:`~reparam_zoo.interop.deployed`: checkpoints with a ``reparam_zoo`` header (deployed nets,
  expanded user models) and the conversions that write or read them.
- :mod:`~reparam_zoo.interop.export` and :mod:`~reparam_zoo.interop.quantize`: ONNX export and
  INT8 quantisation of folded models.

This package imports :mod:`~reparam_zoo.interop.upstream`, so that every adapter and format is
registered whichever interop module is imported first. The registries live in the engines and the
upstream files import the engines, never the reverse: no import cycle.
"""

from reparam_zoo.interop import upstream  # noqa: F401  (registers every adapter and checkpoint format)
