"""``igr fit``: LightningCLI over :class:`IGRSystem` and :class:`IGRDataModule` (omegaconf parser mode).

    igr fit -c configs/experiment/coarse.yaml [--trainer.max_steps 1000] [--ckpt_path last] [--trust-pickle]

Any config value can be overridden on the command line. Before training starts, every shard pattern and weight
path in the resolved config is checked, so a typo fails in seconds with the path in the message.

Checkpoints (``--ckpt_path``, ``--model.init_from``) are loaded weights-only; ``--trust-pickle`` allows one that
needs unpickling (code from the file may run: only for a source you trust). ``--ckpt_path last`` resumes from
the newest complete checkpoint (:mod:`igr.checkpoints`).

``${...}`` in the configs refers to other keys (``save_dir: "${...default_root_dir}"``); resolvers such as
``${oc.env:NAME}`` are refused unless ``IGR_FIT_RESOLVERS=1`` is set (:func:`key_references_only`). One ``igr fit``
writes into a run folder at a time (:mod:`igr.runlock`).
"""

from __future__ import annotations

import difflib
import errno
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
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


RESOLVERS_ENV = "IGR_FIT_RESOLVERS"
# OmegaConf's own resolvers (omegaconf.omegaconf.register_default_resolvers); a name not registered is refused by
# OmegaConf itself
_OMEGACONF_RESOLVERS = ("oc.coerce", "oc.create", "oc.decode", "oc.deprecated", "oc.env", "oc.select", "oc.dict.keys",
                        "oc.dict.values")


@contextmanager
def key_references_only() -> Iterator[None]:
    """While ``igr fit`` parses its configs, ``${...}`` resolves references between keys (``${...default_root_dir}``)
    and nothing else: a resolver such as ``${oc.env:HF_TOKEN}`` in a config, an override or a checkpoint's
    hyper-parameters would copy the environment into ``config.yaml`` and ``hparams.yaml``. ``IGR_FIT_RESOLVERS=1``
    lets OmegaConf's resolvers run (a config you wrote yourself)."""
    from omegaconf import OmegaConf

    if os.environ.get(RESOLVERS_ENV, "") == "1":
        yield
        return

    def refuse(name: str):
        def resolver(*args, **kwargs):
            raise IGRError(f"${{{name}:...}} in the fit config: igr fit resolves only references between keys; "
                           f"set {RESOLVERS_ENV}=1 to let it run {name}")
        return resolver

    with warnings.catch_warnings():
        # OmegaConf 2.4 renames it register_resolver (2.3's register_resolver is the old, string-only API)
        warnings.simplefilter("ignore", UserWarning)
        for name in _OMEGACONF_RESOLVERS:
            OmegaConf.register_new_resolver(name, refuse(name), replace=True)
    try:
        yield
    finally:
        OmegaConf.clear_resolvers()  # OmegaConf's defaults again


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
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from igr.runlock import release_all, run_folder

    try:
        with trusting_pickles(trust), key_references_only():
            IGRCLI(
                IGRSystem,
                IGRDataModule,
                args=["fit", *argv],
                parser_kwargs={"parser_mode": "omegaconf+"},  # interpolations see CLI overrides
                save_config_kwargs={"overwrite": True},
                seed_everything_default=0,
            )
    except SystemExit as exc:
        # Lightning answers Ctrl-C by a graceful shutdown and exit(1) from inside its KeyboardInterrupt handler;
        # the shell convention (and igr's other commands) is 130
        if isinstance(exc.__context__, KeyboardInterrupt):
            print("interrupted", file=sys.stderr)
            return 130
        raise
    except MisconfigurationException as exc:  # Lightning's check of a trainer setting: its first line says it
        raise IGRError(f"trainer: {str(exc).strip().splitlines()[0]}") from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:  # a checkpoint or log write; the saves are atomic, so nothing torn is left
            raise IGRError(f"{exc.filename or run_folder()}: no space left on device while training; the last "
                           "complete checkpoint is kept (resume with --ckpt_path last once there is room)") from None
        raise
    finally:
        release_all()  # the run folder's lock (igr.runlock), also when the fit failed
    return 0
