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


TRUE_WORDS = {"true", "t", "yes", "y", "1", "on"}
FALSE_WORDS = {"false", "f", "no", "n", "0", "off"}


def str2bool(value):
    if isinstance(value, bool):
        return value
    if value.lower() in TRUE_WORDS:
        return True
    if value.lower() in FALSE_WORDS:
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (True/False), got {value!r}")


def add_bool(group, *names, default=False, help=""):
    """The one bool flag of every CLI here: bare (`--use_fp16`), with a value (`--use_fp16=True`, `--use_fp16 no`),
    or negated (`--no-use_fp16`, argparse's BooleanOptionalAction spelling, which the data tools took first)."""
    action = group.add_argument(*names, type=str2bool, nargs="?", const=True, default=default, metavar="BOOL",
                                help=help)
    negations = ["--no-" + name[2:] for name in names if name.startswith("--")]
    group.add_argument(*negations, dest=action.dest, action="store_false", default=argparse.SUPPRESS,
                       help=argparse.SUPPRESS)
    return action


def argument_parser(description):
    return argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
