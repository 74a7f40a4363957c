"""The import layering holds in this repository, and the check really catches each kind of break.

Both run ``scripts/layering.py`` (the same check as ``make check``) in a subprocess; the second
one on small throw-away trees that each break one rule.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "layering.py"


def run_layering(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), "--root", str(root)],
                          capture_output=True, text=True, timeout=120, check=False)


def make_tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_repository_keeps_its_layers() -> None:
    result = run_layering(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout


CLEAN = {"minik8s/__init__.py": "", "apiserver/__init__.py": "", "minictl/__init__.py": ""}


def test_a_clean_tree_passes(tmp_path: Path) -> None:
    make_tree(tmp_path, {**CLEAN, "apiserver/storage.py": "import aetcd\nfrom minik8s import errors\n",
                         "minik8s/errors.py": ""})
    result = run_layering(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("files", "broken"), [
    ({"minik8s/api.py": "import apiserver\n"}, "the library (minik8s) imports no daemon"),
    ({"minictl/main.py": "from apiserver import app\n", "apiserver/app.py": ""},
     "daemons do not import each other"),
    ({"minik8s/client.py": "import aetcd\n"}, "only apiserver imports aetcd"),
    ({"minictl/main.py": "import grpc\n"}, "only kubelet and apiserver import grpc"),
    ({"imagedata/__init__.py": "", "imagedata/wrapper.py": "import minik8s\n"},
     "the function runtime (imagedata) imports nothing of minik8s"),
])
def test_a_broken_rule_fails_the_check(tmp_path: Path, files: dict[str, str], broken: str) -> None:
    make_tree(tmp_path, {**CLEAN, **files})
    result = run_layering(tmp_path)
    assert result.returncode != 0, result.stdout
    assert f"{broken} BROKEN" in result.stdout, result.stdout + result.stderr


def test_an_unknown_package_fails_the_check(tmp_path: Path) -> None:
    make_tree(tmp_path, {**CLEAN, "newdaemon/__init__.py": ""})
    result = run_layering(tmp_path)
    assert result.returncode != 0
    assert "newdaemon" in result.stderr
