"""The reparam-zoo command line: list, check (exit 0 / 1 / 2), schema."""

import json
import subprocess
import sys

import reparam_zoo as rz
from reparam_zoo.cli.app import main


def test_list_prints_every_shipped_spec(capsys):
    assert main(["list", "--branches"]) == 0
    out = capsys.readouterr().out
    for name in rz.list_specs():
        assert name in out
    assert "1x1_kxk" in out


def test_check_one_spec_prints_branches_params_macs_and_error(capsys):
    assert main(["check", "dbb", "--in-channels", "8", "--out-channels", "16", "--stride", "2"]) == 0
    out = capsys.readouterr().out
    assert "branches.4: 1x1 + bn -> kxk + bn" in out
    assert "params: train" in out and "MACs @ 56x56" in out and "OK" in out


def test_check_all_sweeps_geometries_and_writes_json(tmp_path, capsys):
    path = tmp_path / "r.json"
    assert main(["check", "--all", "--json", str(path)]) == 0
    rows = json.loads(path.read_text())
    assert {r["spec"] for r in rows} == set(rz.list_specs())
    assert len(rows) == 4 * len(rz.list_specs())
    assert all(r["ok"] and r["max_rel"] <= 1e-12 for r in rows)
    assert all(r["deploy_params"] <= r["train_params"] for r in rows)
    assert "all OK" in capsys.readouterr().out


def test_check_exits_1_above_tolerance(capsys):
    assert main(["check", "acb", "--dtype", "float32", "--tolerance", "1e-30"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_check_without_spec_exits_2(capsys):
    assert main(["check"]) == 2
    assert "give a SPEC" in capsys.readouterr().err


def test_check_unknown_spec_exits_2(capsys):
    assert main(["check", "repvg"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'repvgg'" in err and err.count("\n") == 1


def test_check_bad_geometry_exits_2(capsys):
    assert main(["check", "repvgg", "--in-channels", "6", "--groups", "4"]) == 2
    assert "divisible by groups" in capsys.readouterr().err


def test_schema_is_json(capsys):
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "reparam_zoo block spec"


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "reparam_zoo", "list"], capture_output=True, text=True, check=True)
    assert "repvgg" in out.stdout


def test_every_command_is_one_module_of_the_table():
    """`reparam-zoo --help` lists exactly the commands of cli/app.py's table, each from its own module."""
    from reparam_zoo.cli.app import COMMANDS, build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert list(sub.choices) == list(COMMANDS)
    for name, module in COMMANDS.items():
        assert sub.choices[name].get_default("func").__module__ == module.__name__
