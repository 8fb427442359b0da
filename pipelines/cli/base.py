"""How every `troupe` command reports errors and renders its help (the root group's class).

Errors (ours: the CLI's contract, tested in tests/unit/test_cli.py):
- any error — a mistyped problem name, an unknown version or experiment, a
  missing file, a usage mistake — prints ONE line, `error: <what> …`, on
  stderr and exits with code 2, the code click already uses for usage errors;
- `troupe --debug <command> …` (or TROUPE_DEBUG=1) re-raises instead, so the
  full traceback is printed;
- `typer.Exit(n)` keeps its code (e.g. `loop gate` exits 1 when the gate refuses).

Help: Typer 0.29 prints the Python type of every parameter (`<bool>` next to a
flag that takes no value, `<str>` next to every text option). Flags get no
metavar; valued options get the classic click word (TEXT, INTEGER, NUMBER,
PATH); arguments are shown by their upper-case name only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer
from typer._click import Context
from typer._click.exceptions import ClickException, NoArgsIsHelpError
from typer.core import TyperArgument, TyperGroup, TyperOption

from models.errors import TroupeError

USAGE_EXIT_CODE = 2
_TYPE_WORDS = {"str": "TEXT", "int": "INTEGER", "float": "NUMBER"}


def _option_metavar(option: TyperOption) -> str:
    desc = option.type_descriptor
    if desc.is_path or (isinstance(desc.annotation, type) and issubclass(desc.annotation, Path)):
        return "PATH"
    return _TYPE_WORDS.get(option.bare_type(), option.bare_type().upper())


def _no_type_column(ctx: Context) -> None:
    return None


def tidy_help(command: Any) -> None:
    """Give every parameter below `command` a plain metavar (see the module docstring). Idempotent."""
    params = list(getattr(command, "params", []))
    help_option = command.get_help_option(Context(command, info_name=command.name))
    if help_option is not None:
        params.append(help_option)
    for param in params:
        if isinstance(param, TyperOption):
            if param.is_flag or param.count:
                param.metavar = ""
            elif param.metavar is None and not param.type_descriptor.is_choice:
                param.metavar = _option_metavar(param)
        elif isinstance(param, TyperArgument):
            if param.metavar is None:
                param.metavar = (param.name or "value").upper()
            # The name column already shows PROBLEM; a type column would repeat it as <str>.
            param.display_type_rich = _no_type_column  # type: ignore[method-assign]
    for sub in getattr(command, "commands", {}).values():
        tidy_help(sub)


def one_line(error: BaseException) -> str:
    """`error: …` on one line: a Troupe error is its message; anything else is prefixed by its type."""
    if isinstance(error, ClickException):
        text = error.format_message()
    elif isinstance(error, TroupeError):
        text = str(error)
    else:
        text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return "error: " + " ".join(text.split())


class TroupeGroup(TyperGroup):
    """The root `troupe` group: plain help everywhere, one-line errors with exit code 2."""

    def make_context(self, info_name: str | None, args: list[str], parent: Context | None = None, **extra: Any) -> Any:
        tidy_help(self)  # before parsing: `troupe --help` is printed while the root context is made
        return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: Context) -> Any:
        debug = bool(ctx.params.get("debug")) or os.environ.get("TROUPE_DEBUG", "") not in ("", "0")
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, NoArgsIsHelpError, SystemExit, KeyboardInterrupt):
            raise  # an exit code chosen on purpose, or a group called bare (prints its help)
        except Exception as error:
            if debug:
                raise
            hint = "" if isinstance(error, ClickException) else "  (troupe --debug … prints the traceback)"
            typer.echo(one_line(error) + hint, err=True)
            raise typer.Exit(USAGE_EXIT_CODE) from None
