"""One file per upstream research repository (or library): the adapters that recognise its
re-parameterized blocks (registered in :data:`reparam_zoo.interop.adopt.ADOPTERS`) beside the key
renames of its checkpoints (registered in :data:`reparam_zoo.interop.checkpoints.FORMATS`), as timm
keeps ``checkpoint_filter_fn`` beside its model.

Importing this package registers them all; :mod:`reparam_zoo.interop` imports it, so any import
of the interop room (``reparam_zoo`` itself included) has every adapter and format registered.
Where several adapters look at one class name, the first registered is tried first: the modules are
imported in this order (Apple's ``MobileOneBlock`` before timm's, RepLKNet's
``ReparamLargeKernelConv`` before timm's). DBB's ``ConvBN`` and YOLOv6's ``ConvModule`` adapters are plain
conv + BN helpers (``helper=True``): a same-named class of another layout (YOLOv6's own ``ConvBN`` wraps a
``ConvModule``) is walked into, not reported.
"""

from reparam_zoo.interop.upstream import (  # noqa: F401  (register the adapters and formats)
    acnet,
    dbb,
    mobileone,
    orepa,
    qarepvgg,
    replknet,
    repvgg,
    timm,
    ultralytics,
    yolov6,
)
