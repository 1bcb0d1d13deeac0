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

from igr.errors import IGRError


def _preflight(argv: list[str]) -> None:
    """Before LightningCLI starts: a missing DeepSpeed extra, and unknown config keys with the nearest valid
    ones (jsonargparse's own message for those is a page of union-type diagnostics). A missing or unreadable file,
    an unknown top-level key and one in the typed sections fail before torch, Lightning and diffusers are imported;
    the keys directly under ``model:`` and ``data:`` need their classes' signatures, so they are checked after."""
    from omegaconf import OmegaConf

    from igr.config import DiffusionConfig, ModelConfig, OptimConfig, SamplingConfig

    # the keys LightningCLI writes into a run's config.yaml, so `igr fit -c RUN/config.yaml` repeats a run
    top = {"model", "data", "trainer", "seed_everything", "ckpt_path", "weights_only", "optimizer", "lr_scheduler"}
    typed = {
        "model.model": ModelConfig,
        "model.diffusion": DiffusionConfig,
        "model.optim": OptimConfig,
        "model.sampling": SamplingConfig,
    }
    docs = []
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
        for key in doc:
            if key not in top:
                raise IGRError(f"{path}: unknown key '{key}'{_near(key, top)}")
        _check_sections(path, doc, typed)
        docs.append((path, doc))
    if any(isinstance(doc.get(k), dict) for _, doc in docs for k in ("model", "data")):
        from igr.data import IGRDataModule
        from igr.system import IGRSystem

        for path, doc in docs:
            _check_sections(path, doc, {"model": IGRSystem.__init__, "data": IGRDataModule.__init__})


def _check_sections(path: str, doc: dict, sections: dict) -> None:
    """Every key of each dotted ``section`` of ``doc`` (through ``init_args``) is a parameter of its target."""
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
    argv = list(sys.argv[1:] if argv is None else argv)
    _preflight(argv)

    from igr.data import IGRDataModule
    from igr.export import TRUST_FLAG, trusting_pickles
    from igr.fit_cli import IGRCLI
    from igr.system import IGRSystem

    trust = TRUST_FLAG in argv  # ours, not LightningCLI's: it covers --ckpt_path and model.init_from
    argv = [a for a in argv if a != TRUST_FLAG]
    # `args` always carries the arguments here, also when `igr fit` was typed on a command line.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    from igr.runlock import release_all

    try:
        with trusting_pickles(trust):
            IGRCLI(
                IGRSystem,
                IGRDataModule,
                args=["fit", *argv],
                parser_kwargs={"parser_mode": "omegaconf+"},  # interpolations see CLI overrides
                save_config_kwargs={"overwrite": True},
                seed_everything_default=0,
            )
    finally:
        release_all()  # the run folder's lock (igr.runlock), also when the fit failed
    return 0
