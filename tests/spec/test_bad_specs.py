"""Malformed specs: each file in tests/spec/bad_specs/ states the message it must produce.

``# expect: TEXT`` lines are fragments the SpecError message must contain (the message
must also name the file); an optional ``# build: IN OUT STRIDE GROUPS`` line gives the
geometry (default 8 8 1 1). The CLI must exit 2 with one line, no traceback.
"""

from pathlib import Path

import pytest

import reparam_zoo as rz
from reparam_zoo.cli.app import main

BAD = sorted((Path(__file__).parent / "bad_specs").glob("*.yaml"))


def _header(path: Path):
    expects, build = [], (8, 8, 1, 1)
    for line in path.read_text().splitlines():
        if line.startswith("# expect:"):
            expects.append(line[len("# expect:"):].strip())
        elif line.startswith("# build:"):
            build = tuple(int(v) for v in line[len("# build:"):].split())
    return expects, build


def _load_and_build(path: Path):
    _, (cin, cout, stride, groups) = _header(path)
    spec = rz.load_spec(path)
    return rz.build_block(spec, cin, cout, stride=stride, groups=groups)


def test_there_are_bad_specs():
    assert len(BAD) >= 20


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_bad_spec_raises_spec_error_naming_file_location_and_rule(path):
    expects, _ = _header(path)
    assert expects, f"{path.name} has no '# expect:' line"
    with pytest.raises(rz.SpecError) as info:
        _load_and_build(path)
    msg = str(info.value)
    assert msg.startswith(str(path) + ": "), msg
    for fragment in expects:
        assert fragment in msg, f"expected {fragment!r} in {msg!r}"
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("path", BAD[:6], ids=lambda p: p.stem)
def test_cli_check_exits_2_with_one_line(path, capsys):
    _, (cin, cout, stride, groups) = _header(path)
    code = main(["check", str(path), "--in-channels", str(cin), "--out-channels", str(cout),
                 "--stride", str(stride), "--groups", str(groups)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("reparam-zoo: error: ") and err.count("\n") == 1
    assert "Traceback" not in err
