"""The command-line parser every script starts from. It imports no oneflow, so light tools use it too."""
import argparse
import copy


def has_default(action):
    return action.default not in (None, argparse.SUPPRESS) and (
        bool(action.option_strings) or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE))


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """--help lists every flag's default, as "(default: X)" unless its help text already says what the default is.
    Descriptions keep their line breaks (several are module docstrings)."""

    def _format_action(self, action):
        if not action.help and has_default(action):  # argparse prints no help column for a flag without help
            action = copy.copy(action)
            action.help = "(default: %(default)s)"
        return super()._format_action(action)

    def _get_help_string(self, action):
        if not has_default(action) or "default" in action.help:
            return action.help
        return f"{action.help} (default: %(default)s)"


def argument_parser(description):
    return argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
