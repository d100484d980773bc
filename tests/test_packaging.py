"""What a pip install gets: the license file, ninja by default, the CPU wheel index documented."""
import re
import sys

import pytest

from conftest import REPO

tomllib = pytest.importorskip("tomllib") if sys.version_info >= (3, 11) else pytest.importorskip("tomli")


def project():
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def test_license_file_is_the_license_pyproject_names():
    text = (REPO / "LICENSE").read_text()
    assert project()["license"] == "MIT" and project()["license-files"] == ["LICENSE"]
    assert text.startswith("MIT License") and "WITHOUT WARRANTY OF ANY KIND" in text


def test_ninja_is_a_default_dependency_and_submitit_an_extra():
    names = [re.split(r"[<>=;\[ ]", d)[0] for d in project()["dependencies"]]
    assert "ninja" in names and "torch" in names
    extras = project()["optional-dependencies"]
    assert any(d.startswith("submitit") for d in extras["cluster"])
    assert any(d.startswith("submitit") for d in extras["test"])      # the submitit tests run in CI


def test_readme_installs_torch_from_the_cpu_index_first():
    section = (REPO / "README.md").read_text().split("## Install", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("pip install")]
    assert lines[0].startswith("pip install torch --index-url https://download.pytorch.org/whl/cpu")
    assert lines[1].startswith("pip install -e '.[train]'")
