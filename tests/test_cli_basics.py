"""The command line itself: help, version, one-line usage errors."""

from branchnet import __version__
from conftest import assert_one_line_error

PIPELINE_COMMANDS = ["train-single", "affinity", "build", "export", "train", "run", "select", "groupings"]


def test_help_lists_every_pipeline_step(cli):
    result = cli("--help")
    assert result.code == 0
    for name in PIPELINE_COMMANDS:
        assert name in result.out


def test_version(cli):
    result = cli("--version")
    assert result.code == 0 and __version__ in result.out


def test_unknown_command_is_one_line(cli):
    assert_one_line_error(cli("frobnicate"), "no such command")


def test_unknown_option_is_one_line(cli):
    assert_one_line_error(cli("build", "--no-such-option"), "no such option")
