"""The typer application, its error handling, and the options every command shares.

Commands live in one small module each (``branchnet/cli/<step>.py``) and only parse
arguments and call the library; all work happens in library functions a Python user
can call too.
"""

from __future__ import annotations

import importlib
import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from branchnet import __version__
from branchnet.errors import BadInput

# typer >= 0.2x vendors click as ``typer._click``; older typer uses click itself. Take the
# exception classes from wherever typer's own BadParameter lives.
_click = importlib.import_module(typer.BadParameter.__module__)

app = typer.Typer(
    name="branchnet",
    help="Decide which layers a multi-task vision network should share, by measurement.\n\n"
         "Pipeline: train-single -> affinity -> build -> train (or `run` for all of it); "
         "select/groupings pick budgeted task groupings among trained candidates.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"branchnet {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
) -> None:
    """Decide which layers a multi-task vision network should share, by measurement."""


# Options shared by the pipeline commands (docs/design.md, "Command line").
ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="Experiment config (YAML), e.g. configs/scenes.yaml.")]
RunsOption = Annotated[Optional[Path], typer.Option(
    "--runs", help="Experiment directory (default: runs/<config name>).")]
OutOption = Annotated[Optional[Path], typer.Option("--out", "-o", help="Where to write the result file.")]
def _quiet(value: bool) -> bool:
    from branchnet.progress import set_quiet

    if value:
        set_quiet(True)
    return value


QuietOption = Annotated[bool, typer.Option("--quiet", "-q", callback=_quiet,
                                           help="No progress bars or status lines (errors still print).")]


def one_line(message: str) -> str:
    """Collapse a message to a single line for stderr."""
    return "; ".join(part.strip() for part in str(message).strip().splitlines() if part.strip())


def fail(message: str) -> int:
    """Print ``branchnet: error: <message>`` on stderr (one line) and return exit code 2.

    Under torchrun every rank meets the same bad input; only rank 0 says so (one line in all)."""
    import os

    if os.environ.get("RANK", "0").strip() in ("", "0"):
        print(f"branchnet: error: {one_line(message)}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``branchnet`` console script; returns the exit code.

    Exit 0 on success, 2 on bad input or usage (one line on stderr), 1 on an internal
    fault (with the traceback, so it can be reported), 130 on Ctrl-C (``branchnet:
    interrupted``), 143 on SIGTERM and 129 on SIGHUP (``branchnet: terminated``).
    """
    import branchnet.cli  # noqa: F401  (registers every command on ``app``)
    from branchnet.progress import set_quiet

    set_quiet(False)
    command = typer.main.get_command(app)
    previous = _catch_interrupts()
    terminations = _catch_terminations()
    try:
        result = command.main(args=argv, prog_name="branchnet", standalone_mode=False)
    except _click.NoArgsIsHelpError as exc:
        typer.echo(exc.ctx.get_help() if exc.ctx else "")
        return 0
    except Interrupted:
        print("branchnet: interrupted", file=sys.stderr)
        return 130
    except Terminated as exc:
        print("branchnet: terminated", file=sys.stderr)
        return 128 + exc.signum
    except typer.Exit as exc:
        return exc.exit_code
    except _click.UsageError as exc:
        hint = f"; see `{exc.ctx.command_path} --help`" if exc.ctx else ""
        return fail(exc.format_message().rstrip(".") + hint)
    except _click.ClickException as exc:
        return fail(exc.format_message())
    except BadInput as exc:
        return fail(str(exc))
    except (KeyboardInterrupt, typer.Abort):
        print("branchnet: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        for signum, handler in terminations.items():
            signal.signal(signum, handler)
    return result if isinstance(result, int) else 0


class Interrupted(BaseException):
    """Ctrl-C, raised by our SIGINT handler: not a KeyboardInterrupt, so that the command-line
    library does not turn it into a silent exit before :func:`main` can say so."""


def _catch_interrupts():
    """Install the SIGINT handler for this command (main thread only); returns the previous one."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return None  # someone (a test runner, an embedding program) handles Ctrl-C: leave it to them

    def handler(signum, frame):
        raise Interrupted()

    return signal.signal(signal.SIGINT, handler)


class Terminated(BaseException):
    """SIGTERM or SIGHUP (``signum``), raised by our handler so that the command unwinds as after
    Ctrl-C: locks released, temporary files removed, ``branchnet: terminated`` on stderr and exit
    128 + signum (143, 129)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = int(signum)


#: The signals that end a command like Ctrl-C does, with ``branchnet: terminated``.
TERMINATING_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


def _catch_terminations() -> dict[int, object]:
    """Install the SIGTERM and SIGHUP handlers for this command (main thread only, and only where a
    signal still has its default action: ``nohup``'s ignored SIGHUP stays ignored); returns the
    previous handlers. A process forked from this one (a data-loader worker) that gets the signal
    dies of it, as it would without the handler."""
    import os
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}
    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise Terminated(signum)

    previous = {}
    for signum in TERMINATING_SIGNALS:
        if signal.getsignal(signum) is signal.SIG_DFL:
            previous[signum] = signal.signal(signum, handler)
    return previous


# Overrides of the most common config values (docs/design.md, "Command line"); --set covers the rest.
BackboneOption = Annotated[Optional[str], typer.Option("--backbone", help="Override model.backbone (a timm ResNet/HRNet).")]
EpochsOption = Annotated[Optional[int], typer.Option("--epochs", help="Override train.epochs.")]
BatchSizeOption = Annotated[Optional[int], typer.Option("--batch-size", help="Override train.batch_size.")]
ImageSizeOption = Annotated[Optional[tuple[int, int]], typer.Option("--image-size", help="Override data.image_size: H W.")]
DeviceOption = Annotated[Optional[str], typer.Option("--device", help="Override train.device: auto, cpu, cuda, cuda:N.")]
SetOption = Annotated[Optional[list[str]], typer.Option(
    "--set", help="Override any config value: section.key=value (YAML value), repeatable.")]
TaskOption = Annotated[Optional[list[str]], typer.Option("--task", "-t", help="Only this task (repeatable).")]

# Options of the commands that train many networks of trees (evaluate, search).
BudgetsOption = Annotated[Optional[str], typer.Option(
    "--budgets", help="Params budgets, comma-separated (e.g. 1.2M,1.6M,2.4M), each between the all-shared "
                      "and all-separate networks.")]
SweepOption = Annotated[Optional[int], typer.Option(
    "--sweep", help="K budgets evenly spaced between all-shared and all-separate (default: 3).")]
JobsOption = Annotated[str, typer.Option(
    "--jobs", metavar="N|auto", help="Networks trained at once on this machine, each in its own process: N, or auto (one per GPU, "
                   "or one per two free CPU cores). Default 1: one at a time in this process.")]
PerDeviceOption = Annotated[Optional[int], typer.Option(
    "--per-device", metavar="K", help="Networks that share one GPU (with --jobs auto: K per GPU). GPUs only.")]
CurvesOption = Annotated[bool, typer.Option(
    "--curves", help="Also draw every network's curves.png (not drawn by default: it costs more than the rest "
                     "of saving a small network).")]


def resolve_config(config: Path, runs: Optional[Path], sets: Optional[list[str]] = None, *,
                   backbone: Optional[str] = None, epochs: Optional[int] = None,
                   batch_size: Optional[int] = None, image_size: Optional[tuple[int, int]] = None,
                   device: Optional[str] = None, tasks: Optional[list[str]] = None, trains: bool = True):
    """Load ``config`` with command-line overrides; returns (Config, runs directory).

    ``trains``: the command runs on ``train.device``, which is checked here, before anything is
    read or written (:func:`branchnet.devices.check_device`); a command with a device option of
    its own (``affinity``'s RSA and FAFS) passes False and checks that one.
    """
    from branchnet.config import load_config

    overrides = {"model.backbone": backbone, "train.epochs": epochs, "train.batch_size": batch_size,
                 "data.image_size": list(image_size) if image_size else None, "train.device": device}
    loaded = load_config(config, overrides=overrides, sets=sets)
    if trains:
        from branchnet.devices import check_device

        check_device(loaded.train.device, "--device" if device is not None else "train.device")
    return loaded, (runs if runs is not None else loaded.default_runs_dir())
