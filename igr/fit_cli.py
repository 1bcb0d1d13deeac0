"""The LightningCLI behind ``igr fit`` (:mod:`igr.train` runs it after its quick checks). A module of its own so that
``igr fit`` can refuse a missing or malformed config before Lightning, torch and diffusers are imported (on the
project's 2-core VM, saying "config file not found" took 18.8 s, nearly all of it imports; now 0.3 s).
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.cli import LightningCLI

from igr.errors import IGRError


def _check_setup(system, datamodule) -> None:
    cfg = system.model_config
    size = tuple(getattr(datamodule, "image_size", cfg.resolution))
    if size != tuple(cfg.resolution):
        raise IGRError(f"data.image_size {size} differs from model.model.resolution {tuple(cfg.resolution)}")


def _refuse_earlier_checkpoints(trainer, trust_pickle: bool = False) -> None:
    """A fresh fit into a run folder that already holds checkpoints (files, or DeepSpeed's folders) would overwrite
    them (same names: the version counter is off, igr.checkpoints.harden), e.g. ``make train-coarse`` typed again
    to resume. The refusal says where to go: ``--ckpt_path last`` only when a complete checkpoint is there to
    resume from."""
    from igr.checkpoints import checkpoint_dirs, scan_checkpoints

    for folder in checkpoint_dirs(trainer):
        found = sorted(p.name for p in folder.glob("*.ckpt") if not p.name.startswith(".")) if folder.is_dir() else []
        if not found:
            continue
        shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        complete, broken = scan_checkpoints(folder, trust_pickle)
        if complete:
            step, _, newest = max(complete, key=lambda c: c[:2])
            advice = f"resume it with --ckpt_path last (newest complete: {newest.name}, step {step})"
        else:
            advice = (
                f"none of them can be resumed from ({broken[0]}); move them away, or train into another "
                "--trainer.default_root_dir"
            )
        raise IGRError(
            f"{folder}: holds checkpoints of an earlier run ({shown}) that this fresh fit would overwrite; {advice}"
            + (", or train into another --trainer.default_root_dir" if complete else "")
        )


class IGRCLI(LightningCLI):
    def before_fit(self) -> None:
        # Everything here runs before trainer.fit creates the run folder, config.yaml or a TensorBoard file.
        from igr.runlock import lock_run_folder

        lock_run_folder(self.trainer)  # one writer per run folder: a second fit into it stops here
        ckpt_path = self.config[self.config.get("subcommand") or "fit"].get("ckpt_path")
        if ckpt_path is None:  # a fresh fit
            from igr.export import pickles_trusted

            _refuse_earlier_checkpoints(self.trainer, pickles_trusted())
            if self.model.init_from:
                # Loaded now, so a refused, broken or missing file fails before any run file. (A resume takes its
                # weights from the checkpoint and may not have the init_from file any more.)
                self.model.apply_init_from()
        _check_setup(self.model, self.datamodule)
        self.datamodule.setup("fit")  # a missing shard path fails now, naming the key and the path
        from igr.data.shards import require_usable

        require_usable(self.datamodule.train_shards, "data.train_shards")  # every shard unreadable: stop here
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
        if not ckpt_path or not Path(ckpt_path).exists():
            return  # "last", "best" or a missing path: resolved (and reported) when fit starts
        # a DeepSpeed folder: its model-states file carries the same hyper_parameters
        hparams = dict(read_checkpoint(ckpt_path, mmap=True).get("hyper_parameters") or {})  # --trust-pickle: igr.train
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
