"""Engine primitives beyond torch's own layers: parameterised convs, one file each.

Each file defines the training module and registers it (as a conv parameterisation
usable as ``param:`` in specs) together with its step converter.
"""

from reparam_zoo.engine.primitives import basis_residual, identity_residual, weight_norm  # noqa: F401
