"""Built-in branch types, one file each; importing this package registers them."""

from reparam_zoo.engine.branches import (  # noqa: F401
    avgpool,
    conv,
    group,
    identity,
    k_by_one,
    kxk,
    line,
    one_by_k,
    one_kxk,
    seq,
)
