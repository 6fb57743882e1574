"""Fold error: every shipped block spec folded in float64 / float32 / float16 / bfloat16, relative
error against the float64 training form (`verify`: fold_rel = folded weights in the dtype, evaluated
exactly; run_rel = the folded form run in the dtype; train_rel = the training form run in the dtype)."""

import torch

from _common import parser, report

import reparam_zoo as rz


def main():
    args = parser(__doc__).parse_args()
    dev = args.device
    c, size = (16, 14) if args.quick else (64, 56)
    dtypes = [torch.float64, torch.float32, torch.bfloat16] + ([torch.float16] if dev == "cuda" or not args.quick
                                                                else [])
    rows = []
    for name in rz.list_specs():
        groups = c if name in ("mobileone", "replknet", "unireplknet") else 1
        torch.manual_seed(0)
        block = rz.build_block(name, c, c, groups=groups).to(dev)
        row = {"spec": name, "groups": groups}
        for dt in dtypes:
            r = rz.verify(block, (2, c, size, size), dtype=dt, shapes=[(2, c, size, size), (1, c, 7, 8)], randomize=True)
            key = str(dt).replace("torch.", "")
            row[f"{key} fold"] = r.fold_rel
            if dt != torch.float64:
                row[f"{key} run"] = r.max_rel
            row[f"{key} ok"] = r.ok
        rows.append(row)
    cols = ["spec", "groups"] + [k for k in rows[0] if k not in ("spec", "groups") and not k.endswith(" ok")]
    worst = {str(dt).replace("torch.", ""): max(r[f"{str(dt).replace('torch.', '')} fold"] for r in rows)
             for dt in dtypes}
    report("fold_error", args, rows, cols, f"worst fold error per dtype: {worst}; all ok: "
           f"{all(v for r in rows for k, v in r.items() if k.endswith(' ok'))}")


if __name__ == "__main__":
    main()
