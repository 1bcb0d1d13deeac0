"""``igr fit``: LightningCLI over :class:`IGRSystem` and :class:`IGRDataModule` (omegaconf parser mode).

    igr fit -c configs/experiment/coarse.yaml [--trainer.max_steps 1000] [--ckpt_path last] [--trust-pickle]

Any config value can be overridden on the command line. Before training starts, every shard pattern and weight
path in the resolved config is checked, so a typo fails in seconds with the path in the message.

Checkpoints (``--ckpt_path``, ``--model.init_from``) are loaded weights-only; ``--trust-pickle`` allows one that
needs unpickling (code from the file may run: only for a source you trust). ``--ckpt_path last`` resumes from
the newest complete checkpoint (:mod:`igr.checkpoints`).
"""

from __future__ import annotations

import difflib
import sys
import warnings
from pathlib import Path

from lightning.pytorch.cli import LightningCLI

from igr.errors import IGRError


def _check_setup(system, datamodule) -> None:
    cfg = system.model_config
    size = tuple(getattr(datamodule, "image_size", cfg.resolution))
    if size != tuple(cfg.resolution):
        raise IGRError(f"data.image_size {size} differs from model.model.resolution {tuple(cfg.resolution)}")


def _refuse_earlier_checkpoints(trainer) -> None:
    """A fresh fit into a run folder that already holds checkpoints would overwrite them (same names: the version
    counter is off, igr.checkpoints.harden), e.g. ``make train-coarse`` typed again to resume."""
    from igr.checkpoints import checkpoint_dirs

    for folder in checkpoint_dirs(trainer):
        found = sorted(p.name for p in folder.glob("*.ckpt")) if folder.is_dir() else []
        if found:
            shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
            raise IGRError(
                f"{folder}: holds checkpoints of an earlier run ({shown}) that this fresh fit would overwrite; "
                "resume it with --ckpt_path last, or train into another --trainer.default_root_dir"
            )


class IGRCLI(LightningCLI):
    def before_fit(self) -> None:
        # Everything here runs before trainer.fit creates the run folder, config.yaml or a TensorBoard file.
        ckpt_path = self.config[self.config.get("subcommand") or "fit"].get("ckpt_path")
        if ckpt_path is None:
            _refuse_earlier_checkpoints(self.trainer)
        if self.model.init_from and ckpt_path is None:
            # A fresh fit: load init_from now, so a refused, broken or missing file fails before any run file.
            # (A resume takes its weights from the checkpoint and may not have the init_from file any more.)
            self.model.apply_init_from()
        _check_setup(self.model, self.datamodule)
        self.datamodule.setup("fit")  # a missing shard path fails now, naming the key and the path
        from igr.checkpoints import harden

        harden(self.trainer)

    def parse_arguments(self, parser, args) -> None:
        self._args = args  # kept for _parse_ckpt_path's second parse
        super().parse_arguments(parser, args)

    def _parse_ckpt_path(self) -> None:
        """A ``--ckpt_path`` file's hyper-parameters, read with our loader (a refused payload is one line, and
        ``--trust-pickle`` is honoured), become the defaults of the model's arguments: a value given on the command
        line or in a ``-c`` config wins. LightningCLI merges them over everything given instead (Lightning #20801),
        so a resume could not change a weight path that moved or the validation guidance, and silently kept the old
        value. (``--ckpt_path last`` is resolved when fit starts and does not read them.)"""
        from igr.export import read_checkpoint

        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not ckpt_path or not Path(ckpt_path).is_file():
            return  # "last", "best" or a missing file: resolved (and reported) when fit starts
        hparams = dict(read_checkpoint(ckpt_path).get("hyper_parameters") or {})  # --trust-pickle: see main()
        hparams.pop("_instantiator", None)
        if not hparams:
            return
        # IGRSystem's init arguments (model, diffusion, optim, sampling, init_from), parsed and checked as given
        # ones would be, become those arguments' defaults; then the same command is parsed again over them.
        parser = self._subcommand_parsers[subcommand]
        merged = parser.parse_object({"model": hparams}, parser.get_defaults())
        parser.set_defaults({f"model.{key}": merged[f"model.{key}"] for key in hparams})
        self.config = self.parser.parse_args(self._args)

    def fit(self, model, datamodule=None, ckpt_path=None, weights_only=None, **kwargs) -> None:
        from igr.checkpoints import resume_checkpoint
        from igr.export import pickles_trusted

        trust = pickles_trusted()
        ckpt_path = resume_checkpoint(self.trainer, ckpt_path, trust_pickle=trust)
        # weights-only unless the user trusts the file: a checkpoint cannot run code on resume
        weights_only = not trust if weights_only is None else weights_only
        self.trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=weights_only, **kwargs)


def _preflight(argv: list[str]) -> None:
    """Before LightningCLI starts: a missing DeepSpeed extra, and unknown config keys with the nearest valid
    ones (jsonargparse's own message for those is a page of union-type diagnostics)."""
    from omegaconf import OmegaConf

    from igr.data import IGRDataModule
    from igr.system import IGRSystem

    configs = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("-c", "--config")]
    for path in configs:
        if not Path(path).is_file():
            raise IGRError(f"{path}: config file not found")
        if "DeepSpeedStrategy" in Path(path).read_text() or "deepspeed" in " ".join(argv).lower():
            import importlib.util

            if importlib.util.find_spec("deepspeed") is None:
                raise IGRError(f"{path}: uses DeepSpeed, which is not installed (pip install -e .[deepspeed])")
        try:
            doc = OmegaConf.to_container(OmegaConf.load(path))
        except Exception as exc:  # PyYAML scanner/parser errors (several lines each)
            from igr.config import yaml_error_line

            raise IGRError(f"{path}: not a readable YAML config ({yaml_error_line(exc)})") from None
        if not isinstance(doc, dict):
            raise IGRError(f"{path}: expected a mapping at the top level")
        from igr.config import DiffusionConfig, ModelConfig, OptimConfig, SamplingConfig

        sections = {
            "model": IGRSystem.__init__,
            "data": IGRDataModule.__init__,
            "model.model": ModelConfig,
            "model.diffusion": DiffusionConfig,
            "model.optim": OptimConfig,
            "model.sampling": SamplingConfig,
        }
        # the keys LightningCLI writes into a run's config.yaml, so `igr fit -c RUN/config.yaml` repeats a run
        top = {"model", "data", "trainer", "seed_everything", "ckpt_path", "weights_only", "optimizer",
               "lr_scheduler"}
        for key in doc:
            if key not in top:
                raise IGRError(f"{path}: unknown key '{key}'{_near(key, top)}")
        for section, target in sections.items():
            node = doc
            for part in section.split("."):
                node = node.get(part) if isinstance(node, dict) else None
                if isinstance(node, dict) and "init_args" in node:
                    node = node["init_args"]
            if not isinstance(node, dict):
                continue
            valid = _parameters(target)
            for key in node:
                if key not in valid and key not in ("class_path", "init_args"):
                    raise IGRError(f"{path}: unknown key '{section}.{key}'{_near(key, valid)}")


def _parameters(target) -> set[str]:
    import dataclasses
    import inspect

    if dataclasses.is_dataclass(target):
        return {f.name for f in dataclasses.fields(target)}
    return {p for p in inspect.signature(target).parameters if p != "self"}


def _near(key: str, valid) -> str:
    near = difflib.get_close_matches(key, sorted(valid), n=3)
    return f"; did you mean {', '.join(near)}?" if near else f"; valid keys: {', '.join(sorted(valid))}"


def main(argv: list[str] | None = None) -> int:
    from igr.data import IGRDataModule
    from igr.export import TRUST_FLAG, trusting_pickles
    from igr.system import IGRSystem

    argv = list(sys.argv[1:] if argv is None else argv)
    trust = TRUST_FLAG in argv  # ours, not LightningCLI's: it covers --ckpt_path and model.init_from
    argv = [a for a in argv if a != TRUST_FLAG]
    _preflight(argv)
    # `args` always carries the arguments here, also when `igr fit` was typed on a command line.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    with trusting_pickles(trust):
        IGRCLI(
            IGRSystem,
            IGRDataModule,
            args=["fit", *argv],
            parser_kwargs={"parser_mode": "omegaconf+"},  # interpolations see CLI overrides
            save_config_kwargs={"overwrite": True},
            seed_everything_default=0,
        )
    return 0
