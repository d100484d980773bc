"""Every code block of README.md runs as written.

* ``python`` blocks are executed, each in a fresh interpreter in a temporary folder.
* ``bash`` blocks: every command line is checked against the command itself, without running the
  minutes-to-days of training it starts: ``python -m <module> ...`` (also ``.venv/bin/python`` and
  the ``rstfast-*`` entry points) is parsed by that module's own argparse parser
  (``build_parser()``), so a flag or value that does not exist fails here; ``bash <script>`` must
  name a script of the repository that ``bash -n`` accepts; ``python -m pytest ...`` must collect
  (``--collect-only``). The README's two top commands are what CI runs (``.ci/run``) and what the
  main job's tests exercise.
"""
import importlib
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

README = REPO / "README.md"
# CLI modules -> where their argparse parser is built.
PARSERS = {
    "rstfast.train": "rstfast.train", "rstfast.data": "rstfast.data.generate",
    "rstfast.reproduce": "rstfast.reproduce", "rstfast.equivariance": "rstfast.equivariance.__main__",
    "rstfast.plot": "rstfast.plot", "rstfast.csrc.build": "rstfast.csrc.build",
    "benchmarks.report": "benchmarks.report", "benchmarks.scaling": "benchmarks.scaling",
    "benchmarks.gpu": "benchmarks.gpu", "benchmarks.paper_runs": "benchmarks.paper_runs", "rstfast.check": "rstfast.check",
}
ENTRY_POINTS = {"rstfast-train": "rstfast.train", "rstfast-data": "rstfast.data",
                "rstfast-reproduce": "rstfast.reproduce"}


def blocks(language):
    text = README.read_text()
    return [m.group(1) for m in re.finditer(rf"```{language}\n(.*?)```", text, re.S)]


def commands(block):
    """The block's command lines, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    return [words for line in joined.splitlines()
            if (words := shlex.split(line, comments=True))]


def test_readme_has_the_two_commands_first():
    first = commands(blocks("bash")[0])
    assert [c[:2] for c in first] == [["bash", "scripts/quickstart.sh"], ["bash", "scripts/test.sh"]]
    assert "bash scripts/test.sh" in (REPO / ".ci" / "run").read_text()


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_block_runs(index, tmp_path):
    code = blocks("python")[index]
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, f"README python block {index}:\n{code}\n{done.stderr[-3000:]}"


def _module_and_args(words):
    if words[0] in ENTRY_POINTS:
        return ENTRY_POINTS[words[0]], words[1:]
    if Path(words[0]).name.startswith("python") and words[1:2] == ["-m"]:
        return words[2], words[3:]
    return None, None


@pytest.mark.parametrize("index", range(len(blocks("bash"))))
def test_bash_block_commands_exist_as_written(index, tmp_path):
    for words in commands(blocks("bash")[index]):
        module, args = _module_and_args(words)
        if words[0] == "bash":
            script = REPO / words[1]
            assert script.is_file(), f"{script} does not exist"
            assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
        elif module == "pytest":
            done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                                   "-p", "no:cacheprovider", *args], cwd=REPO,
                                  capture_output=True, text=True)
            assert done.returncode == 0, f"{words}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        elif module is not None:
            assert module in PARSERS, f"README runs {module}: add its parser to PARSERS"
            parser = importlib.import_module(PARSERS[module]).build_parser()
            try:
                parser.parse_args(args)
            except SystemExit as exc:
                pytest.fail(f"README command {' '.join(words)!r} is rejected by its parser "
                            f"(exit {exc.code})")
        else:
            assert Path(words[0]).name in ("pip", "apt-get", "torchrun", "cd", "export"), \
                f"README command {words} is neither checked nor known"


# Flags whose value a command writes to, and where a command writes without them.
OUTPUT_FLAGS = ("--out", "--results", "--save_model_path", "--dest", "--benchmark-json", "--json")
DEFAULT_OUTPUTS = {"benchmarks.scaling": "benchmarks/results", "rstfast.equivariance": "equivariance"}


def written_paths(module, args):
    """The files and folders a README command writes (its output flags, the folder of the JSON
    benchmarks.report writes beside, the default output of a command given none)."""
    paths = [value for flag, value in zip(args, args[1:]) if flag in OUTPUT_FLAGS]
    paths += [a.split("=", 1)[1] for a in args if a.split("=", 1)[0] in OUTPUT_FLAGS and "=" in a]
    if module == "benchmarks.report":
        paths += [str(Path(a).parent) for a in args if a.endswith(".json")]
    if module in DEFAULT_OUTPUTS and not any(a.split("=", 1)[0] in OUTPUT_FLAGS for a in args):
        paths.append(DEFAULT_OUTPUTS[module])
    return paths


def test_readme_commands_overwrite_no_tracked_file():
    listed = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    tracked = set(listed.stdout.splitlines())
    checked = 0
    for block in blocks("bash"):
        for words in commands(block):
            module, args = _module_and_args(words)
            if module is None:
                continue
            for path in written_paths(module, args):
                path = os.path.normpath(path)
                clash = sorted(t for t in tracked if t == path or t.startswith(path + "/"))
                assert not clash, f"README command {' '.join(words)!r} writes over tracked {clash[:3]}"
                checked += 1
    assert checked >= 5


def test_readme_nan_note_is_what_the_backends_do():
    """One NaN pixel: the direct backends make only the outputs over it NaN, fft every output of
    that image; the other image of the batch stays finite."""
    import math
    import torch
    from rstfast import backends
    from rstfast.nn import LiftingConv
    text = README.read_text()
    assert "**NaN and infinity in the input.**" in text and "makes **every** output of that image NaN" in text
    runnable = [b for b in ("reference", "cpp", "fft") if backends.available_backends("cpu").get(b) is None]
    for backend in runnable:
        layer = LiftingConv(1, 4, kernel_size=15, effective_size=7, scales=[1.7, 2.45, 3.54, 5.1],
                            rotations=[r * math.pi / 4 for r in range(8)], padding=7, basis_type="E",
                            mult=1.5, max_order=4, backend=backend)
        x = torch.randn(2, 1, 28, 28)
        x[0, 0, 14, 14] = float("nan")
        with torch.no_grad():
            nan = torch.isnan(layer(x))
        share = nan[0].double().mean().item()
        assert not nan[1].any(), backend
        assert share == 1.0 if backend == "fft" else 0.05 < share < 0.35, (backend, share)
