"""`reparam-zoo convert` and `export`: the help names every registered format; refusals say how to fix them."""

import pytest

from reparam_zoo.cli.app import main
from reparam_zoo.interop.checkpoints import FORMATS


@pytest.mark.parametrize("command", ["convert", "export"])
def test_from_help_lists_every_registered_format(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    helps = text[text.index("--from FORMAT "):]
    assert len(FORMATS) >= 7
    for name in FORMATS.names():
        assert f" {name}" in helps.split("\n  -")[0], (name, helps)


def test_int8_data_with_other_channels_says_how_to_fix_it(tmp_path, capsys):
    onnx = tmp_path / "net.onnx"
    assert main(["export", "--net", "tiny_vgg", "--onnx", str(onnx), "--int8", "--data", "digits"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "--data digits has 1 channel(s) but the net takes --in-channels 3" in err[0]
    assert "pass --in-channels 1" in err[0] and "--data images with 3 channel(s)" in err[0]
    assert not onnx.exists()
