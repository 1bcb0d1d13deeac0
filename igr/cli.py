"""The ``igr`` command line (also ``python -m igr``).

Each sub-command lives in the module that owns it and exposes ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their command runs, so ``igr --help`` is fast.
``igr fit`` is a LightningCLI and parses its own arguments. Command docstrings are reStructuredText (for the API
docs); :func:`plain_text` turns them into the plain text ``--help`` prints.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys

from igr import __version__
from igr.errors import IGRError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("igr.commands.info", "build a model config on the meta device and print parameter counts"),
    "download-weights": (
        "igr.commands.download",
        "fetch SD1.5, IP-Adapter, CLIP and garment-parser weights (needs a network)",
    ),
    "demo": ("igr.demo", "run the whole tiny pipeline end to end and write outputs/demo/report.md"),
    "fit": ("igr.train", "train with LightningCLI (coarse or HQFT fine-tune)"),
    "train-vae": ("igr.commands.train_vae", "train the tiny world's VAE on shards (demo)"),
    "train-clip": ("igr.commands.train_clip", "pre-train the tiny world's CLIP image encoder on synthetic shards (demo)"),
    "train-base": (
        "igr.commands.train_base",
        "pre-train the tiny world's base UNet (the SD1.5 analogue GarmNet and the denoiser start from) (demo)",
    ),
    "train-classifier": (
        "igr.commands.train_classifier",
        "train the tiny world's garment classifier (kind/colour/pattern, fd_tiny) for igr eval --classifier (demo)",
    ),
    "export": ("igr.commands.export", "write a pipeline folder (safetensors + config) from a checkpoint"),
    "make-shards": (
        "igr.data.commands.make_shards",
        "convert a dataset (or generate synthetic data) to WebDataset shards",
    ),
    "check-shards": ("igr.data.commands.check_shards", "validate shards and count good samples and failures"),
    "curate": ("igr.data.commands.curate", "build the HQFT fine-tune set from the coarse shards"),
    "bench-data": ("igr.data.commands.bench_data", "measure decode + augment throughput"),
    "bench": (
        "igr.commands.bench",
        "speed and memory benchmarks: restoration, plain-SD floor, GarmNet-once, CFG batching, training step",
    ),
    "eval": ("igr.commands.eval", "restore test shards with pipeline folders and score them (Tables 1-3)"),
    "diagnose": ("igr.commands.diagnose", "measure which conditions a model follows: GarmNet, IP-Adapter, prompt"),
    "restore": ("igr.commands.restore", "restore garments from person photos (single image or a folder)"),
    "serve": ("igr.commands.serve", "the restoration web app (Gradio) on 127.0.0.1"),
    "bench-metrics": (
        "igr.metrics.commands.bench_metrics",
        "what each evaluation metric costs per test pair (SSIM, LPIPS, DISTS, FID, CLIP-FID, KID)",
    ),
    "eval-folders": (
        "igr.metrics.commands.eval_folders",
        "score predicted images against ground truth folders",
    ),
}


_LITERAL = re.compile(r"``(.+?)``")
_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`~?([^`]+)`")  # :mod:`igr.x`, :py:func:`~f`


def plain_text(text: str | None) -> str | None:
    """reStructuredText of a docstring as the plain text a terminal shows: ``x`` and :role:`x` become x, a
    paragraph's closing ``::`` (a literal block follows, already indented) becomes ``:``, a lone ``::`` goes."""
    if not text:
        return text
    lines = []
    for line in text.splitlines():
        line = _ROLE.sub(r"\1", _LITERAL.sub(r"\1", line))
        stripped = line.rstrip()
        if stripped.endswith("::"):
            if not stripped[:-2].strip():
                continue  # an expanded-form "::" paragraph of its own
            stripped = stripped[:-2].rstrip() + ":"  # "Example::" -> "Example:"
            line = stripped
        lines.append(line)
    return "\n".join(lines)


def _render_help(parser: argparse.ArgumentParser) -> None:
    """Docstring markup out of a command's description, epilog and argument help: the one place it is done."""
    parser.description = plain_text(parser.description)
    parser.epilog = plain_text(parser.epilog)
    for action in parser._actions:  # argparse's public API offers no other walk over the arguments
        if isinstance(action.help, str):
            action.help = plain_text(action.help)


def _load(name: str):
    module_name, _ = COMMANDS[name]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name == module_name or module_name.startswith(exc.name + ".")):
            raise IGRError(
                f"command '{name}' is not available in this version ({module_name} missing)"
            ) from exc
        raise


# Import name -> the pyproject extra that installs it: `pip install igr` is inference only (tests/test_install.py).
EXTRAS = {
    **dict.fromkeys(("lightning", "pytorch_lightning", "webdataset", "braceexpand", "jsonargparse", "tensorboard"),
                    "train"),  # fmt: skip
    **dict.fromkeys(("torchmetrics", "lpips", "DISTS_pytorch", "cleanfid"), "metrics"),
    **dict.fromkeys(("gradio", "gradio_client"), "app"),
    "deepspeed": "deepspeed",
}


def _missing_extra(exc: BaseException, command: str) -> str | None:
    """One line for a command whose optional dependencies are not installed: which extra to install."""
    while exc is not None and not isinstance(exc, ModuleNotFoundError):
        exc = exc.__cause__ or exc.__context__
    extra = EXTRAS.get((exc.name or "").split(".")[0]) if exc is not None else None
    if extra is None:
        return None
    return f"igr {command} needs the [{extra}] extra: pip install 'igr[{extra}]' (no module named {exc.name})"


def _igr_cause(exc: BaseException | None) -> IGRError | None:
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, IGRError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _os_error_line(exc: OSError) -> str | None:
    """One line for a file the OS refused (permission, disk full, read-only): ``<path>: <reason>``."""
    if exc.filename is None:
        return None
    return f"{exc.filename}: {exc.strerror or exc.__class__.__name__}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "fit":
        # LightningCLI owns the whole argument list after "fit".
        try:
            return _load("fit").main(argv[1:]) or 0
        except Exception as exc:
            # jsonargparse wraps errors raised while it builds our configs in a page of union-type diagnostics;
            # ours is the one line worth showing.
            cause = _igr_cause(exc)
            line = str(cause) if cause is not None else _missing_extra(exc, "fit")
            if line is None and isinstance(exc, OSError):
                line = _os_error_line(exc)
            if line is None:
                raise
            print(f"error: {line}", file=sys.stderr)
            return 2

    parser = argparse.ArgumentParser(prog="igr", description=plain_text(__doc__.splitlines()[0]))
    parser.add_argument("-V", "--version", action="version", version=f"igr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] in ("-h", "--help", "-V", "--version") or argv[0] not in COMMANDS:
        parser.parse_args(argv or ["--help"])
        return 2

    name = argv[0]
    try:
        module = _load(name)
        cmd_parser = argparse.ArgumentParser(prog=f"igr {name}", description=COMMANDS[name][1])
        module.add_arguments(cmd_parser)
        _render_help(cmd_parser)
        args = cmd_parser.parse_args(argv[1:])
        return int(module.run(args) or 0)
    except IGRError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a folder that vanished, a full disk, a file this user may not read
        line = _os_error_line(exc)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:  # an optional extra (training, metrics, the app) not installed
        line = _missing_extra(exc, name)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
