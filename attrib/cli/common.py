"""What every command shares: the `attrib` group, the one place where an AttribError becomes a message
and an exit status, and small helpers on options the user gave."""

from __future__ import annotations

import logging

import click

from attrib import __version__
from attrib.errors import AttribError


class _Shown(click.ClickException):
    """An AttribError as click shows it: 'Error: <message>' on stderr, no traceback, the error's exit status."""

    def __init__(self, exc: AttribError):
        super().__init__(str(exc))
        self.exit_code = exc.exit_code


class AttribGroup(click.Group):
    """The top-level group: the one place where an AttribError becomes a message and an exit status.

    Subcommands (and the sub-group ``cache``) run inside this ``invoke``, so one ``except`` covers every
    command, including errors raised while converting option values.
    """

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except AttribError as exc:
            raise _Shown(exc) from None


def options_given(names) -> list[str]:
    """The current command's options among ``names`` that the user gave (command line or environment),
    as --option names: an option that does not apply is refused only when it was asked for."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    given = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    return ["--" + n.replace("_", "-").replace("list-file", "list") for n in names
            if ctx.get_parameter_source(n) in given]


def option_given(name: str) -> bool:
    """Whether the user gave the current command's option ``name`` (rather than leaving its default)."""
    return bool(options_given([name]))


def refuse_unused(option: str, needs: str) -> AttribError:
    return AttribError(f"{option} applies only {needs}; drop {option} or add what it needs")


def banner(text: str) -> None:
    line = "!" * min(100, max(60, len(text) + 8))
    click.secho(f"{line}\n!!! {text}\n{line}", fg="red", bold=True, err=True)


@click.group(cls=AttribGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="attrib")
def main() -> None:
    """attrib: which generator made this image? Open-set origin attribution from frozen CLIP features.

    \b
    Stage 1  attrib features   images -> CLIP -> CLS token of every block, cached once (HDF5 shards)
    Stage 2  attrib probe      cached features -> linear probes + open-set scores -> results.jsonl
             attrib report     results.jsonl -> tables (Markdown, CSV) and plots
             attrib robustness train clean, evaluate on JPEG/resize/blur/crop views at five intensities
             attrib cache      ls | info | verify | find  the feature sets in a cache folder
    Use      attrib predict    new images + a head saved by `probe --save-head` -> predictions.csv
             attrib enroll     a saved head + a few images of a new generator -> a head that knows it
    """
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")




def open_fs(path: str):
    from attrib.store import FeatureSet

    return FeatureSet.open(path)
