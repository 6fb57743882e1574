"""OREPA's ``OREPA`` block (JUGGHM/OREPA_CVPR2022, blocks.py) is recognised and refused with the reason:
its kernel is generated from six branches (``weight_orepa_origin``, ``_avg_conv``, ``_pfir_conv`` with the
fixed frequency prior ``weight_orepa_prior``, ``_1x1_kxk_*``, ``_1x1``, ``_gconv_dw/pw``) scaled by
``vector``; the prior branch (a 1x1 conv times a fixed per-channel spatial filter) has no branch type
here, so no spec reproduces the block. (reparam_zoo's own ``orepa`` spec trains OREPA's other branches.)"""

from __future__ import annotations

from reparam_zoo.interop.adopt import register_adopter
from reparam_zoo.interop.adopt.build import AdoptRefused, Recognised


@register_adopter("OREPA", "OREPA")
def recognise(m) -> Recognised:
    if hasattr(m, "orepa_reparam"):
        raise AdoptRefused("already deployed (it holds orepa_reparam)")
    if hasattr(m, "weight_orepa_pfir_conv"):
        raise AdoptRefused("OREPA's prior branch (weight_orepa_pfir_conv x the fixed frequency prior "
                           "weight_orepa_prior) has no reparam_zoo branch type; not adopted")
    raise AdoptRefused("not the official OREPA layout (weight_orepa_* parameters)")
