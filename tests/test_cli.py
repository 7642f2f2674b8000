"""One bool-flag syntax for every command line of the project (utils/cli.py's add_bool)."""
import pytest

from test_newcomer import ENTRY_POINTS, entry_point_parser
from utils.cli import add_bool, argument_parser, str2bool

SPELLINGS = [([], True), (["--flag"], True), (["--flag=no"], False), (["--flag", "False"], False),
             (["--flag", "0"], False), (["--flag=on"], True), (["--no-flag"], False)]


@pytest.mark.parametrize("argv, expected", SPELLINGS)
def test_every_bool_spelling(argv, expected):
    parser = argument_parser("test")
    add_bool(parser, "--flag", default=True)
    parser.add_argument("positional")
    assert parser.parse_args(["x"] + argv).flag is expected


def test_a_word_that_is_no_bool_is_an_error(capsys):
    parser = argument_parser("test")
    add_bool(parser, "--flag")
    with pytest.raises(SystemExit):
        parser.parse_args(["--flag=maybe"])
    assert "expected a boolean (True/False), got 'maybe'" in capsys.readouterr().err


@pytest.mark.parametrize("script", sorted(ENTRY_POINTS))
def test_every_bool_flag_of_every_script_is_an_add_bool(script, monkeypatch):
    """No store_true / BooleanOptionalAction flags left: each takes a value and has its --no- form."""
    parser = entry_point_parser(ENTRY_POINTS[script], monkeypatch)
    options = parser._option_string_actions
    for action in parser._actions:
        if action.nargs == 0 and action.dest != "help" and not action.option_strings[0].startswith("--no-"):
            pytest.fail(f"{script}: {action.option_strings[0]} takes no value (not an add_bool flag)")
        if action.type is str2bool:
            negation = options["--no-" + action.option_strings[0][2:]]
            assert negation.dest == action.dest and negation.const is False
