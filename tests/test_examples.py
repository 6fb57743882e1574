"""The examples run end to end (tiny budgets) and check what they claim."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_expand_finetune_reproduces_predictions_both_ways(tmp_path):
    pytest.importorskip("torchvision")
    out = tmp_path / "r.json"
    result = _load("expand_finetune").main(["--epochs", "1", "--finetune-epochs", "1", "--size", "16",
                                            "--out", str(out)])
    assert result["start_same_predictions"] and result["start_max_logit_diff"] == 0.0
    assert result["fold_same_predictions"] and result["fold_rel_logit_diff"] <= 1e-5
    assert result["expanded_layers"] == 17 and json.loads(out.read_text())["spec"] == "acb"


def test_any_model_demo_runs_and_reports_exact_results(capsys):
    pytest.importorskip("timm")
    pytest.importorskip("torchvision")
    import runpy

    runpy.run_path(str(ROOT / "examples" / "any_model_demo.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "adopted 43 block(s), left 0" in out and "adopted vs timm (float32): 0.0" in out
    assert "expanded == original (eval, float32): 0.0" in out and "All keys matched successfully" in out


def test_expand_detection_runs_and_reports_exact_results(capsys):
    pytest.importorskip("ultralytics")
    pytest.importorskip("torchvision")
    result = _load("expand_detection").main(["--models", "yolov8n"])["yolov8n"]
    assert result["expanded"] == result["units"] == 39
    assert result["eval"] <= 1e-10 and result["train"] <= 1e-10
    assert result["fold"] <= 1e-5 and result["fused"] <= 1e-5
    assert "All keys matched successfully" in capsys.readouterr().out
