"""Write the hostile corpus: ``python -m tests.adversarial.make_corpus`` (rewrites ``corpus/``).

Every file is an input a hostile or careless user could give reparam_zoo (block specs, net specs,
search spaces, checkpoints) and ``corpus/index.json`` says, per file, its category and what must
happen: ``error`` (a one-line error of the library's own type naming the file, exit 2 on the CLI)
or ``ok`` (accepted and correct: builds and folds within tolerance). CLI calls with bad values are
listed in the index as argument lists. ``runner.py`` runs each under resource limits.
"""

from __future__ import annotations

import io
import json
import pickle
import shutil
import struct
import zipfile
from pathlib import Path

ROOT = Path(__file__).parent / "corpus"
BLOCK = "name: b\nbranches:\n  - type: kxk\n  - type: conv\n    kernel: 1\n"


def block(**fields) -> str:
    """A small valid block spec with some top-level fields replaced (YAML text)."""
    lines = ["name: b"]
    for k, v in fields.items():
        lines.append(f"{k}: {v}")
    if "branches" not in fields:
        lines.append("branches:\n  - type: kxk\n  - type: conv\n    kernel: 1")
    return "\n".join(lines) + "\n"


def branch(extra: str, kind: str = "kxk") -> str:
    """A spec whose second branch has the given extra fields (flow mapping body)."""
    return f"name: b\nbranches:\n  - type: kxk\n  - {{type: {kind}, {extra}}}\n"


def specs() -> list[tuple[str, str, str | bytes, str]]:
    """(name, category, content, expect)"""
    out: list[tuple[str, str, str | bytes, str]] = []

    def add(name, cat, content, expect="error"):
        out.append((name, cat, content, expect))

    # --- YAML structure: bombs, depth, size, duplicates, syntax
    for levels in (3, 5, 7, 9):
        lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
        for i in range(1, levels + 1):
            lines.append(f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
                         f"*a{i - 1}, *a{i - 1}, *a{i - 1}]")
        add(f"alias_bomb_{levels}_levels", "yaml-structure", "\n".join(lines) + f"\nname: b\nkernel: *a{levels}\n"
            "branches: [{type: kxk}]\n")
    add("alias_bomb_in_branches", "yaml-structure",
        "x: &x [{type: kxk}, {type: kxk}, {type: kxk}, {type: kxk}, {type: kxk}, {type: kxk}, {type: kxk}, "
        "{type: kxk}]\ny: &y [*x, *x, *x, *x, *x, *x, *x, *x]\nz: &z [*y, *y, *y, *y, *y, *y, *y, *y]\n"
        "w: &w [*z, *z, *z, *z, *z, *z, *z, *z]\nname: b\nbranches: *w\n")
    for depth in (70, 500, 5000):
        add(f"nested_lists_{depth}", "yaml-structure", "name: b\nkernel: " + "[" * depth + "3" + "]" * depth +
            "\nbranches: [{type: kxk}]\n")
    add("nested_maps_300", "yaml-structure", "name: b\nbranches: [{type: kxk}]\nx: " + "{a: " * 300 + "1" +
        "}" * 300 + "\n")
    add("nested_block_style_100", "yaml-structure",
        "name: b\nbranches: [{type: kxk}]\nx:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 100)) +
        "  " * 100 + "v: 1\n")
    add("file_2mb", "yaml-structure", "name: b\nbranches: [{type: kxk}]\n" + "# padding\n" * 200_000)
    add("long_single_line_300", "yaml-structure", "x" * 300)
    add("long_single_line_5000_colon", "yaml-structure", "name: " + "b" * 5000 + "\nbranches: [{type: kxk}]\n",
        "ok")
    add("long_value_in_error", "yaml-structure", "name: b\nkernel: " + "'" + "9" * 100_000 + "'\n"
        "branches: [{type: kxk}]\n")
    add("duplicate_top_key", "yaml-structure", "name: b\nkernel: 3\nkernel: 5\nbranches: [{type: kxk}]\n")
    add("duplicate_branch_key", "yaml-structure", "name: b\nbranches:\n  - type: kxk\n    type: conv\n")
    add("duplicate_branches", "yaml-structure", BLOCK + "branches: [{type: kxk}]\n")
    add("tab_indent", "yaml-structure", "name: b\nbranches:\n\t- type: kxk\n")
    add("unclosed_bracket", "yaml-structure", "name: b\nbranches: [{type: kxk}\n")
    add("unclosed_quote", "yaml-structure", "name: 'b\nbranches: [{type: kxk}]\n")
    add("two_documents", "yaml-structure", BLOCK + "---\n" + BLOCK)
    add("empty_file", "yaml-structure", "")
    add("only_comment", "yaml-structure", "# nothing here\n")
    add("only_document_marker", "yaml-structure", "---\n...\n")
    add("top_level_list", "yaml-structure", "- name: b\n- branches: []\n")
    add("top_level_scalar", "yaml-structure", "42\n")
    add("top_level_null", "yaml-structure", "null\n")
    add("python_tag", "yaml-structure", "name: !!python/object/apply:os.system ['echo hi']\n"
        "branches: [{type: kxk}]\n")
    add("unknown_tag", "yaml-structure", "name: !custom b\nbranches: [{type: kxk}]\n")
    add("binary_tag", "yaml-structure", "name: !!binary aGVsbG8=\nbranches: [{type: kxk}]\n")
    add("set_tag", "yaml-structure", "name: b\nbranches: !!set {kxk}\n")
    add("anchor_undefined", "yaml-structure", "name: b\nkernel: *nope\nbranches: [{type: kxk}]\n")
    add("mapping_key_is_list", "yaml-structure", "name: b\n? [1, 2]\n: 3\nbranches: [{type: kxk}]\n")
    add("merge_key_loop", "yaml-structure", "base: &base {type: kxk}\nname: b\nbranches: [{<<: *base, kernel: 3}]\n")

    # --- encodings
    add("latin1", "encoding", "name: caf\xe9\nbranches: [{type: kxk}]\n".encode("latin-1"))
    add("utf16_bom", "encoding", BLOCK.encode("utf-16"))
    add("utf32", "encoding", BLOCK.encode("utf-32"))
    add("utf8_bom", "encoding", b"\xef\xbb\xbf" + BLOCK.encode(), "ok")
    add("nul_bytes", "encoding", b"name: b\x00\nbranches: [{type: kxk}]\n")
    add("random_binary", "encoding", bytes(range(256)) * 8)
    add("control_chars", "encoding", "name: b\x07\x1b[31m\nbranches: [{type: kxk}]\n")
    add("gzip_bytes", "encoding", b"\x1f\x8b\x08\x00" + bytes(100))
    add("unicode_name", "encoding", "name: 块🧱\nbranches: [{type: kxk}]\n", "ok")
    add("rtl_override_in_type", "encoding", "name: b\nbranches: [{type: \"k\u202exk\"}]\n")

    # --- sizes asking for unbounded resources
    for name, value in (("kernel_1e30", "1000000000000000000000000000000"), ("kernel_100001", "100001"),
                        ("kernel_1025", "1025"), ("kernel_pair_huge", "[3, 99999999]")):
        add(name, "size", block(kernel=value, padding=0))
    add("dilation_1e6", "size", block(dilation=1_000_000))
    add("padding_1e9", "size", block(padding=1_000_000_000))
    add("count_1e9", "size", branch("count: 1000000000"))
    add("count_65", "size", branch("count: 65"))
    add("branches_65", "size", "name: b\nbranches:\n" + "  - type: kxk\n" * 65)
    add("branches_100000", "size", "name: b\nbranches: [" + ", ".join(["{type: kxk}"] * 100_000) + "]\n")
    add("mid_channels_1e9", "size", branch("mid_channels: 1000000000", "1x1_kxk"))
    add("mid_multiplier_1e6", "size", branch("mid_multiplier: 1000000", "1x1_kxk"))
    add("init_1e308", "size", branch("norm: {type: scale, init: 1.0e+308}", "identity"))
    add("init_1e6_ok", "size", branch("norm: {type: scale, init: 1.0e+6}", "identity"), "ok")
    add("kernel_1024_padding_0", "size", block(kernel=1024, padding=0), "error")
    add("kernel_63_ok", "size", block(kernel=63, padding=0), "ok")

    # --- wrong types
    for name, fields in (("kernel_string", {"kernel": "'3'"}), ("kernel_list1", {"kernel": "[3]"}),
                         ("kernel_list3", {"kernel": "[3, 3, 3]"}), ("kernel_float", {"kernel": "2.5"}),
                         ("kernel_float_int", {"kernel": "3.0"}), ("kernel_bool", {"kernel": "true"}),
                         ("kernel_null", {"kernel": "null"}), ("kernel_map", {"kernel": "{h: 3}"}),
                         ("kernel_negative", {"kernel": "-3"}), ("kernel_zero", {"kernel": "0"}),
                         ("dilation_zero", {"dilation": "0"}), ("padding_negative", {"padding": "-1"}),
                         ("padding_word", {"padding": "valid"}), ("padding_mode_bad", {"padding_mode": "mirror"}),
                         ("act_unknown", {"act": "swishh"}), ("act_list", {"act": "[relu]"}),
                         ("name_list", {"name": "[a, b]"}), ("branches_map", {"branches": "{type: kxk}"}),
                         ("branches_null", {"branches": "null"}), ("branches_empty", {"branches": "[]"}),
                         ("branches_strings", {"branches": "[kxk, conv]"}), ("norm_after_bogus", {"norm_after": "ln"}),
                         ("unknown_top_key", {"kernal": "3"}), ("description_map", {"description": "{a: 1}"})):
        add(name, "types", block(**fields))
    add("branch_type_unknown", "types", "name: b\nbranches: [{type: kxx}]\n")
    add("branch_type_missing", "types", "name: b\nbranches: [{kernel: 3}]\n")
    add("branch_type_number", "types", "name: b\nbranches: [{type: 3}]\n")
    add("branch_count_zero", "types", branch("count: 0"))
    add("branch_count_string", "types", branch("count: two"))
    add("branch_optional_string", "types", branch("optional: maybe"))
    add("step_unknown", "types", "name: b\nbranches: [{type: seq, steps: [{type: convv}]}]\n")
    add("steps_not_list", "types", "name: b\nbranches: [{type: seq, steps: 3}]\n")
    add("conv_kernel_string", "types", branch("kernel: big", "conv"))
    add("when_unknown", "types", branch("kernel: 1, when: sometimes", "conv"))
    add("stride_float_in_branch", "types", branch("kernel: 1, stride: 2.0", "conv"))

    # --- non-finite and out-of-range numbers
    for name, extra, kind in (("eps_inf", "kernel: 1, norm: {type: bn, eps: .inf}", "conv"),
                              ("eps_nan", "kernel: 1, norm: {type: bn, eps: .nan}", "conv"),
                              ("eps_negative", "kernel: 1, norm: {type: bn, eps: -1.0e-5}", "conv"),
                              ("eps_zero", "kernel: 1, norm: {type: bn, eps: 0}", "conv"),
                              ("momentum_nan", "kernel: 1, norm: {type: bn, momentum: .nan}", "conv"),
                              ("init_nan", "norm: {type: scale, init: .nan}", "identity"),
                              ("init_inf", "norm: {type: scale, init: -.inf}", "identity"),
                              ("init_key_on_identity", "init: 2.0", "identity")):
        add(name, "non-finite", branch(extra, kind))

    # --- YAML 1.1 surprises (must mean what they look like)
    add("sexagesimal_kernel", "yaml-1.1", block(kernel="1:00"))
    add("act_off", "yaml-1.1", block(act="off"))
    add("name_no", "yaml-1.1", "name: no\nbranches: [{type: kxk}]\n", "ok")
    add("name_yes_on", "yaml-1.1", "name: on\ndescription: yes\nbranches: [{type: kxk}]\n", "ok")
    add("octal_kernel_0o3_ok", "yaml-1.1", block(kernel="0o3"), "ok")  # YAML 1.2: 0o3 is 3
    add("leading_zero_kernel", "yaml-1.1", block(kernel="03"))  # YAML 1.1 read it as octal
    add("hex_kernel_ok", "yaml-1.1", block(kernel="0x3"), "ok")
    add("kernel_with_underscore", "yaml-1.1", block(kernel="1_1", padding=0))

    # --- rules of the block (messages must locate them)
    add("same_even_kernel", "semantics", block(kernel=4))
    add("branch_bigger_than_block", "semantics", "name: b\nkernel: 3\nbranches: [{type: kxk}, {type: conv, "
        "kernel: 5}]\n")
    add("identity_only_ok", "semantics", "name: b\nbranches: [{type: identity}]\n", "ok")
    add("pool_identity_no_params_ok", "semantics", "name: b\nbranches: [{type: identity}, {type: avgpool}]\n", "ok")
    add("reflect_kernel_31_ok", "semantics", "name: b\nkernel: 31\npadding_mode: reflect\nbranches: [{type: kxk}]\n",
        "ok")
    add("avgpool_exclude_pad", "semantics", branch("count_include_pad: false", "avgpool"))
    add("bn_no_running_stats", "semantics", branch("norm: {type: bn, track_running_stats: false}", "conv"))
    return out


def nets() -> list[tuple[str, str, str | bytes, str]]:
    base = "name: n\ninput_size: 16\nblock: repvgg\nstem: {width: 8, stride: 1}\n"
    out = []

    def add(name, content, expect="error"):
        out.append((name, "net", content, expect))

    add("net_ok", base + "stages: [{width: 8, depth: 1}]\n", "ok")
    add("net_width_1e9", base + "stages: [{width: 1000000000, depth: 1}]\n")
    add("net_width_70000", base + "stages: [{width: 70000, depth: 1}]\n")
    add("net_depth_1e6", base + "stages: [{width: 8, depth: 1000000}]\n")
    add("net_depth_zero", base + "stages: [{width: 8, depth: 0}]\n")
    add("net_stages_empty", base + "stages: []\n")
    add("net_stages_200", base + "stages: [" + ", ".join(["{width: 8, depth: 1, stride: 1}"] * 200) + "]\n")
    add("net_input_size_1e9", base.replace("input_size: 16", "input_size: 1000000000") +
        "stages: [{width: 8, depth: 1}]\n")
    add("net_stride_1e9", base + "stages: [{width: 8, depth: 1, stride: 1000000000}]\n")
    add("net_stride_float", base + "stages: [{width: 8, depth: 1, stride: 2.0}]\n")
    add("net_block_unknown", base.replace("block: repvgg", "block: repvggg") + "stages: [{width: 8, depth: 1}]\n")
    add("net_block_missing_file", base.replace("block: repvgg", "block: nope/x.yaml") +
        "stages: [{width: 8, depth: 1}]\n")
    add("net_groups_indivisible", base + "stages: [{width: 8, depth: 1, groups: 3}]\n")
    add("net_groups_list_empty", base + "stages: [{width: 8, depth: 1, groups: []}]\n")
    add("net_inline_bad_block", base.replace("block: repvgg", "block: {name: x, branches: [{type: kxx}]}") +
        "stages: [{width: 8, depth: 1}]\n")
    add("net_unknown_key", base + "stages: [{width: 8, depth: 1}]\nheads: 2\n")
    add("net_latin1", (base + "description: caf\xe9\nstages: [{width: 8, depth: 1}]\n").encode("latin-1"))
    add("net_nested_2000", base + "stages: " + "[" * 2000 + "]" * 2000 + "\n")
    add("net_alias_bomb", "a: &a [1,1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
        "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
        "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n" + base + "stages: *e\n")
    add("net_list", "- 1\n- 2\n")
    return out


def spaces() -> list[tuple[str, str, str | bytes, str]]:
    head = "name: s\ngeometry: {in_channels: 8, out_channels: 8}\n"
    out = []

    def add(name, content, expect="error"):
        out.append((name, "space", content, expect))

    add("space_ok", head + "block:\n  kernel: {choice: [3, 5]}\n  branches: [{type: kxk}]\n", "ok")
    add("space_choice_empty", head + "block:\n  kernel: {choice: []}\n  branches: [{type: kxk}]\n")
    add("space_choice_not_list", head + "block:\n  kernel: {choice: 3}\n  branches: [{type: kxk}]\n")
    add("space_no_block", head)
    add("space_block_list", head + "block: [1, 2]\n")
    add("space_unknown_key", head + "blocks: {}\nblock: {branches: [{type: kxk}]}\n")
    add("space_geometry_bad", "name: s\ngeometry: {in_channels: 0}\nblock: {branches: [{type: kxk}]}\n")
    add("space_geometry_huge", "name: s\ngeometry: {in_channels: 1000000000, out_channels: 8}\n"
        "block: {branches: [{type: kxk}]}\n")
    add("space_all_invalid", head + "block:\n  kernel: {choice: [2, 4]}\n  branches: [{type: kxk}]\n")
    add("space_explosion_ok", head + "block:\n  branches:\n" +
        "".join("    - {choice: [null, {type: kxk}, {type: conv, kernel: 1}, {type: identity, optional: true}]}\n"
                for _ in range(60)), "ok")  # sampling a 4**60 space is cheap
    add("space_utf16", (head + "block: {branches: [{type: kxk}]}\n").encode("utf-16"))
    add("space_nested_choice_deep", head + "block:\n  kernel: " + "{choice: [" * 40 + "3" + "]}" * 40 +
        "\n  branches: [{type: kxk}]\n")
    add("space_net_not_map", head + "block: {branches: [{type: kxk}]}\nnet: 3\n")
    return out


def checkpoints(tmp_model_state) -> list[tuple[str, str, bytes, str, str]]:
    """(name, category, bytes, expect_api, expect_cli) for a tiny_vgg (10 classes) state dict."""
    import torch

    def saved(obj) -> bytes:
        buf = io.BytesIO()
        torch.save(obj, buf)
        return buf.getvalue()

    good = saved(tmp_model_state)
    out = []

    def add(name, data, api="error", cli="error", suffix=".pth"):
        out.append((name + suffix, "checkpoint", data, api, cli))

    add("ckpt_ok", good, "ok", "ok")
    add("ckpt_module_prefix_ok", saved({"module." + k: v for k, v in tmp_model_state.items()}), "ok", "ok")
    add("ckpt_wrapped_ok", saved({"epoch": 3, "state_dict": tmp_model_state}), "ok", "ok")
    add("ckpt_empty", b"")
    add("ckpt_truncated_half", good[: len(good) // 2])
    add("ckpt_truncated_100", good[:100])
    add("ckpt_garbage", bytes(range(256)) * 64)
    add("ckpt_text", b"this is not a checkpoint\n" * 10)
    add("ckpt_zip_without_data", _zip({"x/readme.txt": b"hi"}))
    add("ckpt_zip_bad_pickle", _zip({"archive/data.pkl": b"\x80\x05garbage", "archive/version": b"3\n"}))
    add("ckpt_refused_pickle", saved_pickle(Evil()))
    add("ckpt_plain_pickle_dict", pickle.dumps({"a": 1}))
    add("ckpt_list_payload", saved([1, 2, 3]))
    add("ckpt_tensor_payload", saved(torch.zeros(3)))
    add("ckpt_int_payload", saved(7))
    add("ckpt_none_payload", saved(None))
    add("ckpt_empty_dict", saved({}))
    add("ckpt_non_tensor_values", saved({k: 1.0 for k in tmp_model_state}))
    add("ckpt_int_keys", saved({i: v for i, v in enumerate(tmp_model_state.values())}))
    add("ckpt_missing_key", saved(dict(list(tmp_model_state.items())[1:])))
    add("ckpt_extra_key", saved({**tmp_model_state, "bogus.weight": torch.zeros(1)}))
    first = next(iter(tmp_model_state))
    add("ckpt_wrong_shape", saved({**tmp_model_state, first: torch.zeros(1, 2, 3)}))
    add("ckpt_wrong_dtype_int", saved({**tmp_model_state, first: tmp_model_state[first].long()}))
    add("ckpt_complex", saved({**tmp_model_state, first: tmp_model_state[first].to(torch.complex64)}))
    add("ckpt_nan_weights", saved({k: (v * float("nan") if v.is_floating_point() else v)
                                   for k, v in tmp_model_state.items()}), "ok", "error")
    add("ckpt_float64_ok", saved({k: (v.double() if v.is_floating_point() else v)
                                  for k, v in tmp_model_state.items()}), "ok", "ok")
    add("ckpt_huge_claimed_header", struct.pack("<Q", 2 ** 62) + b"{}", suffix=".safetensors")
    add("st_empty", b"", suffix=".safetensors")
    add("st_bad_json", struct.pack("<Q", 10) + b"{not json}", suffix=".safetensors")
    add("st_offsets_outside", struct.pack("<Q", 64) + json.dumps(
        {"w": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 4000000]}}).encode().ljust(64) + b"\0" * 16,
        suffix=".safetensors")
    add("st_torch_file", good, suffix=".safetensors")
    add("ckpt_safetensors_ok", _safetensors(tmp_model_state), "ok", "ok", suffix=".safetensors")
    return out


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def saved_pickle(obj) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _zip(members: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0)), data)  # reproducible bytes
    return buf.getvalue()


def _safetensors(state) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in state.items()})


def cli_calls() -> list[tuple[str, list[str], str]]:
    """(name, argv, expect): argv may use {corpus} and {tmp}; every one must fail before any work."""
    good_spec = "{corpus}/specs/kernel_63_ok.yaml"
    calls = [
        ("check_in_channels_0", ["check", "repvgg", "--in-channels", "0"]),
        ("check_stride_0", ["check", "repvgg", "--stride", "0"]),
        ("check_groups_0", ["check", "repvgg", "--groups", "0"]),
        ("check_groups_word", ["check", "repvgg", "--groups", "two"]),
        ("check_tolerance_nan", ["check", "repvgg", "--tolerance", "nan"]),
        ("check_tolerance_inf", ["check", "repvgg", "--tolerance", "inf"]),
        ("check_tolerance_negative", ["check", "repvgg", "--tolerance", "-1"]),
        ("check_size_0", ["check", "repvgg", "--size", "0"]),
        ("check_dtype_bad", ["check", "repvgg", "--dtype", "float8"]),
        ("check_missing_spec", ["check", "{tmp}/nope.yaml"]),
        ("check_spec_is_dir", ["check", "{tmp}"]),
        ("check_json_unwritable", ["check", good_spec, "--json", "/proc/nope/out.json"]),
        ("check_json_is_dir", ["check", good_spec, "--json", "{tmp}"]),
        ("check_no_spec", ["check"]),
        ("compare_epochs_0", ["compare", "--epochs", "0"]),
        ("compare_seeds_0", ["compare", "--seeds", "0"]),
        ("compare_batch_0", ["compare", "--batch-size", "0"]),
        ("compare_limit_negative", ["compare", "--limit", "-1400"]),
        ("compare_latency_runs_0", ["compare", "--latency-runs", "0"]),
        ("compare_lr_nan", ["compare", "--lr", "nan"]),
        ("compare_lr_negative", ["compare", "--lr", "-0.1"]),
        ("compare_size_0", ["compare", "--model", "torchvision:resnet18", "--size", "0"]),
        ("compare_out_unwritable", ["compare", "--out", "/proc/nope"]),
        ("compare_out_is_file", ["compare", "--out", "{corpus}/index.json"]),
        ("compare_unknown_block", ["compare", "repvggg"]),
        ("compare_unknown_net", ["compare", "--net", "nonet"]),
        ("compare_data_missing_dir", ["compare", "--data", "cifar10:{tmp}/nope"]),
        ("compare_device_bogus", ["compare", "--device", "tpu"]),
        ("convert_missing_input", ["convert", "--net", "tiny_vgg", "{tmp}/nope.pth", "{tmp}/out.pth"]),
        ("convert_output_unwritable", ["convert", "--net", "tiny_vgg", "{corpus}/checkpoints/ckpt_ok.pth",
                                       "/proc/nope/out.pth"]),
        ("convert_output_is_dir", ["convert", "--net", "tiny_vgg", "{corpus}/checkpoints/ckpt_ok.pth", "{tmp}"]),
        ("convert_unknown_format", ["convert", "--net", "tiny_vgg", "--from", "repvg",
                                    "{corpus}/checkpoints/ckpt_ok.pth", "{tmp}/out.pth"]),
        ("export_onnx_unwritable", ["export", "--net", "tiny_vgg", "--onnx", "/proc/nope/x.onnx"]),
        ("space_sample_0", ["space", "repvgg_acb", "--sample", "0"]),
        ("space_unknown", ["space", "nospace"]),
        ("search_budget_0", ["search", "repvgg_acb", "--budget", "0"]),
        ("search_out_unwritable", ["search", "repvgg_acb", "--out", "/proc/nope", "--limit", "64"]),
        ("expand_output_unwritable", ["expand", "/proc/nope/x.pth", "--model", "{tmp}/nope.py:f",
                                      "--block", "repvgg"]),
        ("expand_bad_shape", ["expand", "{tmp}/x.pth", "--model", "torchvision:resnet18", "--block", "repvgg",
                              "--input-shape", "1,3,0,4"]),
        ("space_enumerate_explosion", ["space", "{corpus}/spaces/space_explosion_ok.yaml", "--enumerate"]),
        ("check_dev_zero", ["check", "/dev/zero"]),
        ("check_dev_urandom", ["check", "/dev/urandom"]),
        ("convert_dev_zero", ["convert", "--net", "tiny_vgg", "/dev/zero", "{tmp}/out.pth"]),
        ("space_dev_zero", ["space", "/dev/zero"]),
        ("compare_net_dev_zero", ["compare", "--net", "/dev/zero.yaml"]),
        ("check_yaml_text_huge", ["check", "name: b\nbranches: [{type: kxk}]\n" + "#" * 2_000_000]),
        ("check_long_name", ["check", "x" * 5000 + ".yaml"]),
        ("unknown_command", ["bogus"]),
        ("no_command", []),
        ("zoo_write_unwritable", ["zoo", "--write", "/proc/nope/zoo.md"]),
    ]
    return [(name, argv, "error") for name, argv in calls]


def main() -> None:
    import torch

    import reparam_zoo as rz
    from reparam_zoo.engine.nets import build_model, load_net

    torch.manual_seed(0)
    if ROOT.exists():
        shutil.rmtree(ROOT)
    index = []
    for kind, items in (("specs", specs()), ("nets", nets()), ("spaces", spaces())):
        (ROOT / kind).mkdir(parents=True)
        for name, cat, content, expect in items:
            path = ROOT / kind / f"{name}.yaml"
            path.write_bytes(content if isinstance(content, bytes) else content.encode())
            index.append({"file": f"{kind}/{name}.yaml", "kind": kind[:-1], "category": cat, "expect": expect})
    model = rz.randomize_norms(build_model(load_net("tiny_vgg"), 10), seed=1)
    (ROOT / "checkpoints").mkdir()
    for name, cat, data, api, cli in checkpoints(model.state_dict()):
        (ROOT / "checkpoints" / name).write_bytes(data)
        index.append({"file": f"checkpoints/{name}", "kind": "checkpoint", "category": cat, "expect": api,
                      "expect_cli": cli})
    for name, argv, expect in cli_calls():
        index.append({"name": name, "kind": "cli", "category": "cli", "argv": argv, "expect": expect})
    (ROOT / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    files = sum(1 for e in index if "file" in e)
    print(f"wrote {files} files and {len(index) - files} CLI calls into {ROOT}")


if __name__ == "__main__":
    main()
