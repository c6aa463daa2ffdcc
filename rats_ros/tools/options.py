"""What the ``rats-ros`` commands share: option types, model options, error reporting."""
from __future__ import annotations

import argparse
import sys

from rats_ros.errors import ConfigError, InputError, ModelError, QuestionError, RatsError
from rats_ros.settings import cli_option

NS = 1_000_000_000
#: refusals: exit 2 (the rest of RatsError: 1)
USAGE_ERRORS = (ConfigError, InputError, ModelError, QuestionError)


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def add_model_options(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument("--model", required=required,
                        help="checkpoint directory, cached Hugging Face id, or tiny-random / "
                             "tiny-random-qwen2_5_vl / tiny-random-qwen3_vl (random weights, "
                             "for tests)")
    add_engine_options(parser)
    cli_option(parser, "stream_id")
    parser.add_argument("--robot", default="", help="this robot's name in a postgresql:// store "
                                                    "(default: the hostname)")


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """Where and how the model runs: the :class:`~rats_ros.models.BackendConfig` fields, as
    the node's parameters of those names."""
    for name in ("device", "dtype", "engine", "engine_dir", "weights"):
        cli_option(parser, name)


def backend_options(args) -> dict:
    """:returns: :func:`~rats_ros.models.load_backend`'s keywords from
    :func:`add_engine_options`."""
    return {"device": args.device, "dtype": args.dtype, "engine": args.engine,
            "engine_dir": args.engine_dir, "weights": args.weights}


def backend_config(args, model: str | None = None):
    """The :class:`~rats_ros.models.base.BackendConfig` of :func:`add_engine_options` and
    ``--model`` (or ``model``). :raises ConfigError: a value out of range."""
    from rats_ros.models.base import BackendConfig

    return BackendConfig(model or args.model, **backend_options(args))


def fail(command: str, error: RatsError, quiet: bool = False) -> int:
    """Report a typed error on stderr and map it to the exit code."""
    if not quiet:
        print(f"rats-ros {command}: {type(error).__name__}: {error}", file=sys.stderr)
    return 2 if isinstance(error, USAGE_ERRORS) else 1


def where_json(caption) -> dict:
    """The robot and camera (when named) and the pose (when known) of a caption, for JSON."""
    where = {"robot": caption.robot} if getattr(caption, "robot", "") else {}
    if caption.camera:
        where["camera"] = caption.camera
    if caption.has_pose:
        where["pose"] = {"x": caption.pose_x, "y": caption.pose_y, "z": caption.pose_z,
                         "qx": caption.pose_qx, "qy": caption.pose_qy, "qz": caption.pose_qz,
                         "qw": caption.pose_qw, "frame": caption.pose_frame}
    return where


class DefaultsFormatter(argparse.HelpFormatter):
    """Help that shows each option's default, unless its help already says it."""

    def _get_help_string(self, action) -> str:
        text = action.help or ""
        if "default" in text.lower() or action.default in (None, False, argparse.SUPPRESS) \
                or not action.option_strings:
            return text
        return text + " (default: %(default)s)"


def show_defaults(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` and every subcommand below it :class:`DefaultsFormatter`."""
    parser.formatter_class = DefaultsFormatter
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        for child in getattr(action, "choices", {}).values():
            show_defaults(child)
