"""The help layout of the benchmark and simulator commands."""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps a description as written and adds each option's default, except
    where there is none to show (a flag, an unset value) or the help says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help
        shown = action.default not in (None, False, argparse.SUPPRESS)
        if text is not None and shown and "default" not in text and action.option_strings:
            return f"{text} (default: %(default)s)"
        return text
