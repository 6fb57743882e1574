"""The wheel ships the specs: a package installed from it lists and builds them."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_ships_the_specs_and_works_outside_the_checkout(tmp_path):
    wheel_dir, target = tmp_path / "wheel", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheel_dir), str(ROOT)], check=True, capture_output=True)
    (wheel,) = wheel_dir.glob("reparam_zoo-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "reparam_zoo/specs/blocks/repvgg.yaml" in names
    assert any(n.endswith("entry_points.txt") for n in names)
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                    str(wheel)], check=True, capture_output=True)
    code = ("import reparam_zoo as rz, pathlib; print(rz.__file__); print(rz.list_specs()); "
            "print(rz.build_block('dbb', 4, 4).fold())")
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                         check=True).stdout
    assert str(target) in out.splitlines()[0]
    assert "'dbb'" in out and "Conv2d" in out
    # every command module is in the wheel: the command line starts from it, search's help included
    for command in ("compare", "convert", "expand", "search", "space"):
        r = subprocess.run([sys.executable, "-m", "reparam_zoo", command, "--help"], capture_output=True, text=True,
                           cwd=tmp_path, env=env)
        assert r.returncode == 0 and "usage:" in r.stdout, r.stderr
