"""The docs say what the code does: examples run, every spec key is documented."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

import reparam_zoo as rz
from reparam_zoo.spec.registry import SEQ_STEPS
from reparam_zoo.spec.schema import BlockSpec, NormSpec

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _blocks(path: Path, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", path.read_text(), flags=re.S)


def test_adding_a_branch_example_runs_in_a_fresh_interpreter():
    code = "\n".join(_blocks(DOCS / "adding_a_branch.md", "python"))
    assert "register_branch" in code
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "OK" in out.stdout


def test_spec_md_documents_every_key():
    text = (DOCS / "spec.md").read_text()
    models = [BlockSpec, NormSpec, *(m for _, m in SEQ_STEPS.items()), *(t.spec for _, t in rz.BRANCHES.items())]
    missing = sorted({f"{m.__name__}.{k}" for m in models for k in m.model_fields if f"`{k}`" not in text})
    assert not missing, f"docs/spec.md does not mention: {missing}"
    for name in rz.BRANCHES.names():
        assert f"`{name}`" in text, name


def test_spec_md_yaml_examples_build_and_fold():
    built = 0
    for snippet in _blocks(DOCS / "spec.md", "yaml"):
        data = yaml.safe_load(snippet)
        if isinstance(data, list):
            data = {"name": "doc", "branches": data}
        if not (isinstance(data, dict) and "name" in data):
            continue
        block = rz.build_block(data, 8, 8)
        assert rz.verify(block, (1, 8, 9, 9)).ok
        built += 1
    assert built >= 7


def test_compare_md_net_example_builds():
    from reparam_zoo.engine.nets import build_model

    (snippet,) = [b for b in _blocks(DOCS / "compare.md", "yaml") if "stages:" in b]
    model = build_model(yaml.safe_load(snippet), 10)
    assert len(model.stages) == 4


def test_readme_python_example_runs():
    code = "\n".join(_blocks(ROOT / "README.md", "python"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "OK" in out.stdout and "Conv2d" in out.stdout and "RepBlock" not in out.stdout


def test_readme_starts_with_the_two_commands():
    lines = [ln for ln in (ROOT / "README.md").read_text().splitlines() if ln.strip()]
    setup, tests = lines[1].strip(), lines[2].strip()
    assert lines[0].startswith("# ") and lines[1].startswith("    ") and lines[2].startswith("    ")
    ci = (ROOT / ".ci" / "run").read_text()
    pins = re.findall(r'"(torch(?:vision)?==[\d.]+)"', ci)  # the pair CI installs
    assert len(pins) == 2
    assert setup.startswith(f"pip install {pins[0]} {pins[1]} ") and "reparam-zoo check --all" in setup
    assert tests.startswith(f"pip install {pins[0]} {pins[1]} ")
    assert setup.endswith("reparam-zoo compare --out runs/compare")
    test_cmd = re.search(r"^(python -m pytest.*)$", ci, flags=re.M).group(1)
    assert tests.endswith("&& " + test_cmd), "the README must give the test command that .ci/run runs"


def test_search_md_commands_use_real_flags_and_its_python_runs():
    """Every `reparam-zoo search/space` command line in docs/search.md parses (flags and values
    that exist), and its Python example runs."""
    from reparam_zoo.cli.app import build_parser

    text = (DOCS / "search.md").read_text()
    lines = [ln.strip() for b in _blocks(DOCS / "search.md", "sh") for ln in b.splitlines()
             if ln.strip().startswith("reparam-zoo s")]
    assert len(lines) >= 4
    parser = build_parser()
    for line in lines:
        argv = shlex.split(line.split("#")[0])[1:]
        parser.parse_args([a for a in argv if not a.startswith("[") and a != "&"])
    code = "\n".join(_blocks(DOCS / "search.md", "python"))
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=300, cwd=ROOT)
    assert "group-lasso" in text and "TPE" in text


def test_deploy_md_int8_command_parses_and_its_api_names_exist():
    """docs/deploy.md's `export --int8` command line uses flags that exist, and the Python names and
    report fields it shows are the real ones."""
    from reparam_zoo.cli.app import build_parser
    from reparam_zoo.interop.quantize import Int8Report, kernel_stats, quantize_onnx  # noqa: F401

    text = (DOCS / "deploy.md").read_text()
    cmd = text[text.index("reparam-zoo export --net tiny_vgg"):].split("```")[0].replace("\\\n", " ")
    args = build_parser().parse_args(shlex.split(cmd)[1:])
    assert args.int8 and args.calibration == 256 and args.data == "fashion-mnist"
    for name in ("int8_accuracy", "fp32_accuracy", "top1_agreement", "layers"):
        assert f"report.{name}" in text and name in Int8Report.__dataclass_fields__
