"""The command line's option grammars and shared options: one definition each, imported in milliseconds.

Why here and not next to each command: several commands take the same options (the runner's
``--batch-size ... --precision`` in ``features`` and ``predict``), and each grammar (``--layers 6-10``,
``--shots 1,5,all``) should be parsed and described in one place. The parsers themselves stay with the
code that owns the concept (``parse_layers`` with the study, ``View.parse`` with the views); the types
below only call them, and import them when a command runs, never for ``--help``. Choices and defaults
come from :mod:`attrib.choices`, which tests keep equal to the registries.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

import click

from attrib import choices
from attrib.errors import AttribError

DEFAULT_CACHE = "cache"


class OptionError(AttribError, ValueError):
    """An option value outside its grammar; the message names the option, the value and the valid forms."""


def _option_name(param: click.Parameter | None, fallback: str) -> str:
    return param.opts[0] if param is not None and param.opts else fallback


# ------------------------------------------------------------------------------------------ grammars
class _Grammar(click.ParamType):
    """A parameter type whose --help metavar is its name as written (``N|all``, not click's ``N|ALL``)."""

    def get_metavar(self, param, ctx=None) -> str:
        return self.name


@dataclass(frozen=True)
class LayerSpec:
    """A ``--layers`` value; which blocks it means depends on the feature set's depth (``all``, ``-1``)."""

    text: str

    def resolve(self, n_blocks: int) -> list[tuple[int, ...]]:
        """The block tuples (one tuple = one feature vector) of a model with ``n_blocks`` blocks."""
        from attrib.probe.options import parse_layers

        return parse_layers(self.text, n_blocks)


class Layers(_Grammar):
    """``all | 8 | 6-10 | 2,5,8 | concat:9,10,11``, joined with ``;`` (0-based blocks; -1 = the last).

    The text is kept as a :class:`LayerSpec` and parsed by ``parse_layers`` once the feature set (its
    number of blocks) is known.
    """

    name = "SPEC"
    help = "Blocks (0-based; -1 = the last): all | 8 | 6-10 | 2,5,8 | concat:9,10,11; join specs with ';'."

    def convert(self, value: Any, param, ctx) -> LayerSpec:
        return value if isinstance(value, LayerSpec) else LayerSpec(str(value))


class Shots(_Grammar):
    """``1,2,5,10,all``: positive integers and ``all`` (= every training image; ``None``), comma-separated."""

    name = "N,...|all"

    def convert(self, value: Any, param, ctx) -> list[int | None]:
        if isinstance(value, list):
            return value
        out: list[int | None] = []
        for tok in str(value).split(","):
            tok = tok.strip()
            if tok == "all":
                out.append(None)
            elif tok.isdigit() and int(tok) > 0:
                out.append(int(tok))
            else:
                raise OptionError(f"{_option_name(param, '--shots')} {value!r}: use positive integers and 'all', "
                                  "comma-separated")
        return out


class PerClass(_Grammar):
    """A per-class cap: a positive integer, or ``all`` for no cap (kept as the string ``"all"``)."""

    name = "N|all"

    def convert(self, value: Any, param, ctx) -> int | str | None:
        if value is None or isinstance(value, int) or value == "all":
            return value
        if str(value).isdigit() and int(value) > 0:
            return int(value)
        self.fail(f"{value!r}: use a positive integer or 'all'", param, ctx)


class GridValues(_Grammar):
    """One ``--grid NAME=V1,V2,...`` -> ``(NAME, [values])``; a repeated NAME overrides the earlier one."""

    name = "NAME=V1,V2,..."

    def convert(self, value: Any, param, ctx) -> tuple[str, list]:
        if isinstance(value, tuple):
            return value
        from attrib.probe.options import parse_grid

        ((name, values),) = parse_grid([str(value)]).items()
        return name, values


class ParamSetting(_Grammar):
    """One ``--param NAME.KEY=VALUE`` -> ``(NAME, KEY, value)``, the value read as int, float, bool, none or
    text (parsed by ``parse_param``). Whether NAME and KEY exist is checked by the study, against the live
    registries and the chosen --heads / --scores."""

    name = "NAME.KEY=VALUE"
    help = ("A head's or score's hyperparameter (an __init__ parameter of that registry entry), e.g. "
            "mahalanobis.shrinkage=0, rmds.shrinkage=0, knn.k=20, gauss.shrinkage=0.1, logreg.screen_tol=none "
            "(every C of the path solved to logreg.tol, not only those near the best) (repeatable; recorded in each "
            "line's config.params and shown in the table). A head's path (C, k) is set with --grid.")

    def convert(self, value: Any, param, ctx) -> tuple[str, str, Any]:
        if isinstance(value, tuple):
            return value
        from attrib.probe.params import parse_param

        return parse_param(str(value))


class RegistryNames(_Grammar):
    """``a,b`` or ``all`` -> names of a registry (``--heads``, ``--scores``).

    ``all`` expands to the live registry (``registry`` = ``module.NAME``, imported when a command runs);
    unknown names are kept, for the study to reject with the list of available ones.
    """

    name = "NAMES|all"

    def __init__(self, registry: str, names: tuple[str, ...]):
        self.registry, self.names = registry, names

    def convert(self, value: Any, param, ctx) -> list[str]:
        if isinstance(value, list):
            return value
        from attrib.probe.options import expand_names

        module, attr = self.registry.rsplit(".", 1)
        return expand_names(str(value), getattr(importlib.import_module(module), attr))


class ViewSpec(_Grammar):
    """``none`` or ``name:value[+name:value...]`` -> :class:`attrib.extract.views.View` (parsed by ``View.parse``)."""

    name = "SPEC"
    help = ("Perturbation before the model's transform: none, or NAME:VALUE joined with '+', e.g. "
            + ", ".join(k if v is None else f"{k}:{v}" for k, v in choices.VIEW_EXAMPLES.items()) + ".")

    def convert(self, value: Any, param, ctx):
        from attrib.extract.views import View

        return value if isinstance(value, View) else View.parse(value)


# ----------------------------------------------------------------------------------- shared options
def runner_options(device_note: str = "") -> Callable:
    """The stage-1 runner's options, shared by `features` and `predict` (one definition, one set of defaults)."""
    options = (
        click.option("--batch-size", type=click.IntRange(min=1), default=choices.DEFAULT_BATCH_SIZE,
                     show_default=True),
        click.option("--workers", type=click.IntRange(min=0), default=None,
                     help="DataLoader worker processes decoding images. [default: min(8, CPUs - 1)]"),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N." + device_note),
        click.option("--precision", type=click.Choice(choices.PRECISIONS), default="auto", show_default=True,
                     help="auto = fp16 autocast on GPU, fp32 on CPU."),
    )

    def apply(command):
        for option in reversed(options):  # listed in --help in the order above
            command = option(command)
        return command

    return apply


__all__ = ["DEFAULT_CACHE", "GridValues", "LayerSpec", "Layers", "OptionError", "ParamSetting", "PerClass",
           "RegistryNames", "Shots", "ViewSpec", "runner_options"]
