"""The command line as a program: how errors reach the user, and what it imports before a command runs.

Both are checked in a fresh interpreter (a subprocess), the way a user meets them: the exit status and
stderr of ``python -c`` calling ``attrib.cli.main``, and its ``sys.modules`` at exit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from attrib.cli import main
from attrib.errors import AttribError, ProblemsFound
from synthetic_features import make_feature_set

HEAVY = ("torch", "torchvision", "open_clip", "timm", "h5py", "matplotlib", "sklearn")
REPO = Path(__file__).resolve().parents[1]


def _python(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter that imports this checkout's attrib."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=120)


# ------------------------------------------------------------------------------------------- errors
_WITH_COMMAND = """
    import click
    from attrib.cli import main
    from attrib.errors import AttribError, ProblemsFound

    class FreshError(AttribError):  # a new error type no command lists anywhere
        pass

    class FreshProblem(ProblemsFound):
        pass

    @main.command("boom")
    @click.argument("kind")
    def boom(kind):
        click.echo("working")
        raise {"user": FreshError("bad input.tsv: line 3; fix it"), "problems": FreshProblem("2 checks failed"),
               "bug": RuntimeError("a bug")}[kind]

    main(["boom", "{kind}"])
"""


@pytest.mark.parametrize("kind, status, message", [("user", 2, "Error: bad input.tsv: line 3; fix it"),
                                                   ("problems", 1, "Error: 2 checks failed")])
def test_a_new_attrib_error_reaches_the_user_as_a_clean_message(kind: str, status: int, message: str) -> None:
    res = _python(_WITH_COMMAND.replace("{kind}", kind))
    assert res.returncode == status, res.stderr
    assert res.stdout == "working\n" and res.stderr == message + "\n"


def test_an_unexpected_exception_keeps_its_traceback() -> None:
    res = _python(_WITH_COMMAND.replace("{kind}", "bug"))
    assert res.returncode == 1
    assert "Traceback (most recent call last)" in res.stderr and res.stderr.rstrip().endswith("RuntimeError: a bug")
    assert not res.stderr.startswith("Error:")


def test_errors_raised_while_reading_options_are_caught_too(tmp_path: Path) -> None:
    """An option grammar raises AttribError subclasses during click's parsing, outside any command body."""
    res = CliRunner().invoke(main, ["probe", "--shots", "0,5", "--features", str(tmp_path), "--out", str(tmp_path)],
                             catch_exceptions=False)
    assert res.exit_code == 2
    assert res.output == "Error: --shots '0,5': use positive integers and 'all', comma-separated\n"


def test_user_errors_exit_2_and_found_problems_exit_1(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["cache", "info", str(tmp_path)], catch_exceptions=False)
    assert res.exit_code == AttribError.exit_code == 2 and res.output.startswith("Error: ")
    assert "is not a feature set" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(main, ["cache", "find", "--cache", str(tmp_path), "--model", "nothing"],
                             catch_exceptions=False)
    assert res.exit_code == ProblemsFound.exit_code == 1 and "no complete feature set" in res.output


# ---------------------------------------------------------------------------------------- start-up
def _modules_after(args: list[str]) -> tuple[subprocess.CompletedProcess, set[str]]:
    res = _python(f"""
        import json, sys
        from attrib.cli import main
        try:
            main({args!r})
        except SystemExit:
            pass
        sys.stderr.write("\\nMODULES " + json.dumps(sorted({{m.split(".")[0] for m in sys.modules}})))
    """)
    out, _, modules = res.stderr.rpartition("\nMODULES ")
    return res, set(json.loads(modules))


@pytest.mark.parametrize("args", [["--help"], ["probe", "--help"], ["report", "--help"], ["features", "--help"],
                                  ["predict", "--help"], ["cache", "find", "--help"]], ids=" ".join)
def test_help_imports_nothing_heavy(args: list[str]) -> None:
    res, modules = _modules_after(args)
    assert "Usage:" in res.stdout
    assert not modules & set(HEAVY), f"`attrib {' '.join(args)}` imported {sorted(modules & set(HEAVY))}"


def test_cache_ls_reads_manifests_without_hdf5_or_torch(tmp_path: Path) -> None:
    fs = make_feature_set(tmp_path)
    res, modules = _modules_after(["cache", "ls", str(tmp_path)])
    assert f"{fs.path}  {fs.n_images} images  3x12  complete" in res.stdout, res.stderr
    assert not modules & set(HEAVY), f"`attrib cache ls` imported {sorted(modules & set(HEAVY))}"
