"""The repository is self-contained: a clone from a code host, with nothing beside it, runs the
comparisons with the original (rstfast/golden), and no file points to documents or data outside."""
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

# Paths outside the repository and citations of documents it does not contain (docs/ has them).
OUTSIDE = re.compile(r"\.\./shared|shared/golden|shared/spec|\bspec/\w+\.md|\bspec\W{1,3}\w+\.md"
                     r"|\bspec §|\bthe spec\b|\bspec's\b")
CHECKED = ("tests/", "benchmarks/", "rstfast/", "scripts/", "docs/")


def tracked_files():
    """``git ls-files``: what a clone holds."""
    if not (REPO / ".git").exists():
        pytest.skip(f"{REPO} is not a git checkout; the file list comes from git ls-files")
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout
    return [name for name in listing.split("\0") if name]


def test_no_file_points_outside_the_repository():
    this = os.path.relpath(__file__, REPO)
    found = []
    for name in tracked_files():
        if not name.startswith(CHECKED) or name == this:
            continue
        try:
            text = (REPO / name).read_text()
        except UnicodeDecodeError:
            continue                                    # binary (golden .npz, figures)
        found += [f"{name}:{number}: {line.strip()}"
                  for number, line in enumerate(text.splitlines(), 1) if OUTSIDE.search(line)]
    assert not found, "references outside the repository:\n" + "\n".join(found)


def test_golden_tests_run_from_a_copy_with_nothing_beside_it(tmp_path):
    """The tracked files copied into an empty folder run the golden comparisons of the bases and
    layers: every one passes, none is skipped."""
    copy = tmp_path / "rstfast"
    for name in tracked_files():
        target = copy / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    env = {k: v for k, v in os.environ.items() if k != "RSTFAST_GOLDEN_DIR"}
    env["PYTHONPATH"] = str(copy)
    where = subprocess.run([sys.executable, "-c", "import rstfast; print(rstfast.__file__)"],
                           cwd=copy, env=env, capture_output=True, text=True)
    assert where.stdout.strip() == str(copy / "rstfast" / "__init__.py"), where.stderr[-2000:]
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           "tests/test_layers_golden.py", "tests/test_bases.py", "-k", "golden"],
                          cwd=copy, env=env, capture_output=True, text=True)
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert re.fullmatch(r"\d+ passed, \d+ deselected in .*", summary), summary
