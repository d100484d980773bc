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
    "benchmarks.gpu": "benchmarks.gpu", "rstfast.check": "rstfast.check",
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
            assert words[0] in ("pip", "apt-get", "torchrun", "cd", "export"), \
                f"README command {words} is neither checked nor known"
