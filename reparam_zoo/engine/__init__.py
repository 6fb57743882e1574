"""The engine room: the kernel algebra and the modules that train as branches and fold into one conv.

``kernels`` (pure tensor math), ``geometry`` (the block's conv and where a branch sits), ``steps/``
(one file per step kind), ``primitives/`` (parameterised convs), ``branches/`` (the built-in branch
types), ``plan`` (a spec planned for a geometry), ``block`` (``RepBlock``), ``fastfold`` and ``fold``
(the fold), ``verify`` (the one relative error and its tolerances), ``nets`` (networks of blocks),
``cost`` (parameters and MACs). It imports the spec room and nothing above it (docs/architecture.md);
this package module imports nothing, so that importing one engine module loads only what it needs.
"""
