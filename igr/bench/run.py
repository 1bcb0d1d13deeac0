"""Running a benchmark: build the model once with random weights, set up every variant on the same inputs and
initial noise, warm up, measure peak memory, time round-robin, then a training step."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from igr.bench.measure import (
    MemoryMeter,
    Variant,
    available_ram,
    free_memory,
    resolve_device,
    resolve_dtype,
    sync,
)
from igr.bench.names import ALL_VARIANTS, DEFAULT_VARIANTS, OPTIONAL_VARIANTS
from igr.bench.report import build_report
from igr.bench.variants import (
    CompiledDenoiser,
    channels_last,
    literal_attention,
    plain_sd_sample,
    restore_reference,
    uncached_unconditional,
    unfused_attention,
    vae_option,
)
from igr.config import ModelConfig
from igr.errors import IGRError


@dataclass
class BenchOptions:
    config: str
    device: str = "cpu"
    size: tuple[int, int] | None = None  # (H, W); default: the config's resolution
    steps: int = 25
    batch: int = 1
    guidance: float = 1.5
    dtype: str = "auto"  # auto: bfloat16 on CUDA, float32 on the CPU
    repeats: int = 5
    fast_sampler: str = "dpmsolver++"
    fast_steps: int = 15
    train_batch: int | None = None  # default: batch
    skip: tuple[str, ...] = ()
    compile: bool = False
    compile_mode: str | None = None
    compile_backend: str = "inductor"
    vae_slicing: bool = False
    vae_tiling: bool = False
    seed: int = 0


def random_weights_config(cfg: ModelConfig, size: tuple[int, int] | None) -> ModelConfig:
    """The config with every weight path dropped (random init) and, optionally, another resolution."""
    return dataclasses.replace(
        cfg,
        sd_path=None,
        ip_adapter_path=None,
        image_encoder_path=None,
        vae_path=None,
        tokenizer="open_clip",
        resolution=size or cfg.resolution,
    )


def make_inputs(batch: int, size: tuple[int, int], seed: int) -> dict[str, Any]:
    """A synthetic person batch in the DataModule's format (values do not change the speed)."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    mask = torch.zeros(batch, 1, h, w)
    mask[:, :, h // 5 : h * 3 // 4, w // 5 : w * 4 // 5] = 1
    cats = ["upper", "lower", "full"]
    return {
        "person": torch.rand(batch, 3, h, w, generator=g) * 2 - 1,
        "mask": mask,
        "garment": torch.rand(batch, 3, h, w, generator=g) * 2 - 1,
        "category": [cats[i % 3] for i in range(batch)],
    }


@contextlib.contextmanager
def _quiet_diffusers() -> Iterator[None]:
    from diffusers.utils import logging as diffusers_logging

    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(verbosity)


def _host_memory_shortfall(source, device: torch.device, training: bool, plain: bool = True) -> str | None:
    """A one-line reason when the CPU cannot hold what comes next (the kernel would kill the process instead of
    raising), else None. ``source``: a :class:`ModelConfig` (before the build: fp32 parts, plus the plain UNet)
    or the built system (before training: gradients and AdamW state of the trainable parameters)."""
    if device.type != "cpu":
        return None  # GPU out-of-memory raises and is reported per variant
    available = available_ram()
    if available is None:
        return None
    if isinstance(source, ModelConfig):
        from igr.models import build_parts, parameter_counts

        counts = parameter_counts(build_parts(source, meta=True))
        total = counts["trainable"] + counts["frozen"]  # the text encoder is built too, to encode the prompts
        need = 4 * (total + (counts["denoiser"] if plain else 0))
        what = "model build"
    else:
        trainable = sum(p.numel() for p in source.trainable_parameters())
        need = 12 * trainable  # fp32 gradients + two AdamW moments; the weights are already resident
        what = "training step"
    if need > 0.9 * available:
        return f"{what} needs about {need / 1e9:.1f} GB of RAM, {available / 1e9:.1f} GB available"
    return None


def _describe(exc: BaseException) -> str:
    first = str(exc).splitlines()[0] if str(exc) else ""
    if isinstance(exc, torch.OutOfMemoryError):
        return f"out of memory: {first}"
    return f"{type(exc).__name__}: {first}"


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_benchmark(opts: BenchOptions, log: Callable[[str], None] = _log) -> dict[str, Any]:
    from igr.config import load_model_config
    from igr.system import IGRSystem

    device = resolve_device(opts.device)
    dtype = resolve_dtype(opts.dtype, device)
    unknown = [s for s in opts.skip if s not in ALL_VARIANTS]
    if unknown:
        raise IGRError(f"--skip {','.join(unknown)}: unknown variant (known: {', '.join(ALL_VARIANTS)})")
    if "igr" in opts.skip:
        raise IGRError("--skip igr: every figure is relative to the IGR restoration; it cannot be skipped")
    if opts.steps < 1 or opts.batch < 1 or opts.repeats < 1 or opts.fast_steps < 1:
        raise IGRError("--steps, --batch, --repeats and --fast-steps must be at least 1")
    wanted = set(DEFAULT_VARIANTS) - set(opts.skip)
    wanted |= {n for n, on in zip(OPTIONAL_VARIANTS, (opts.compile, opts.vae_slicing, opts.vae_tiling)) if on}
    if opts.guidance == 1.0:
        wanted.discard("cfg-sequential")  # no CFG, nothing to batch

    cfg = random_weights_config(load_model_config(opts.config), opts.size)
    if device.type == "cpu":
        short = _host_memory_shortfall(cfg, device, training=False, plain="plain" in wanted)
        if short:
            raise IGRError(f"{opts.config} on the CPU {short}")
    size = tuple(cfg.resolution)
    log(f"building {cfg.name} with random weights at {size[0]}x{size[1]} ...")
    torch.manual_seed(opts.seed)
    start = time.perf_counter()
    system = IGRSystem(model=cfg)
    build_seconds = time.perf_counter() - start
    model = system.model
    if model.garmnet is None:
        raise IGRError(f"{opts.config}: use_garmnet is false; the benchmark compares GarmNet paths")
    model.eval().to(device=device, dtype=dtype)
    meter = MemoryMeter(device)
    processors = attention_processors(model)

    data = make_inputs(opts.batch, size, opts.seed)
    person, mask, cats = data["person"].to(device), data["mask"].to(device), data["category"]
    latents = torch.randn(model.latent_shape(opts.batch), generator=torch.Generator().manual_seed(opts.seed))
    latents = latents.to(device, dtype)
    steps, g, b = opts.steps, opts.guidance, opts.batch

    def restore(**kw):
        kw.setdefault("num_inference_steps", steps)
        return model.restore(person, mask, cats, guidance_scale=g, latents=latents, **kw)

    def reference(**kw):
        return restore_reference(model, person, mask, cats, latents, steps, g, **kw)

    variants: list[Variant] = [
        Variant(
            "igr",
            "IGR restore (GarmNet once, Q-only attn, batched CFG)",
            restore,
            b,
            "baseline",
            compare=False,
            stages=True,
        ),
    ]
    add = variants.append
    if "garmnet-every-step" in wanted:
        add(
            Variant(
                "garmnet-every-step",
                "GarmNet at every step (naive)",
                lambda: reference(garmnet_every_step=True),
                b,
                "reference",
            )
        )
    if "uncond-uncached" in wanted:
        add(
            Variant(
                "uncond-uncached",
                "unconditional GarmNet features recomputed per call",
                restore,
                b,
                "reference",
                context=lambda: uncached_unconditional(model),
            )
        )
    if "cfg-sequential" in wanted:
        add(
            Variant(
                "cfg-sequential",
                "CFG as two UNet calls per step",
                lambda: reference(sequential_cfg=True),
                b,
                "reference",
            )
        )
    if "literal-concat" in wanted:
        add(
            Variant(
                "literal-concat",
                "eq. 4 literal: attend over [F_hl;F_g], keep half",
                restore,
                b,
                "reference",
                context=lambda: literal_attention(model),
            )
        )
    if "unfused-attention" in wanted:
        add(
            Variant(
                "unfused-attention",
                "unfused attention (SDPA math path)",
                restore,
                b,
                "reference",
                context=unfused_attention,
            )
        )
    if "channels-last" in wanted:
        add(
            Variant(
                "channels-last", "channels-last UNets + VAE", restore, b, context=lambda: channels_last(model)
            )
        )
    if "compiled" in wanted:
        compiled = CompiledDenoiser(model, opts.compile_backend, opts.compile_mode)
        add(
            Variant(
                "compiled",
                f"torch.compile(denoiser, {opts.compile_backend})",
                restore,
                b,
                context=compiled.active,
            )
        )
    if "vae-slicing" in wanted:
        add(
            Variant("vae-slicing", "VAE slicing", restore, b, context=lambda: vae_option(model, slicing=True))
        )
    if "vae-tiling" in wanted:
        add(
            Variant(
                "vae-tiling",
                "VAE tiling (output not bit-comparable)",
                restore,
                b,
                compare=False,
                context=lambda: vae_option(model, tiling=True),
            )
        )
    if "dpm-solver" in wanted:
        add(
            Variant(
                "dpm-solver",
                f"{opts.fast_sampler} at {opts.fast_steps} steps (quality: igr eval)",
                lambda: restore(sampler=opts.fast_sampler, num_inference_steps=opts.fast_steps),
                b,
                compare=False,
            )
        )

    def first_runs(v: Variant) -> None:
        """Warm-up (excluded), then one run for peak memory and the output used by the equivalence check."""
        try:
            log(f"  warm-up + memory: {v.name}")
            v.call(device, model)
            free_memory(device)
            meter.reset()
            v.call(device, model)
            v.peak = meter.peak()
            v.stage_times.clear()
        except Exception as exc:  # one failing optional path must not lose the other figures
            if v.name == "igr" and not isinstance(exc, torch.OutOfMemoryError):
                raise
            v.error = _describe(exc)
        free_memory(device)

    log("IGR variants")
    for v in variants:
        first_runs(v)
    if variants[0].error:
        raise IGRError(f"the IGR restoration failed ({variants[0].error}); try a smaller --size or --batch")

    plain_unet = None
    plain_standalone_peak = None
    if "plain" in wanted:
        from diffusers import UNet2DConditionModel

        log("plain SD (same denoiser config, default processors)")
        before = meter.current()
        with _quiet_diffusers():  # .to(dtype) logs an advisory meant for from_pretrained users
            plain_unet = UNet2DConditionModel(**cfg.unet).eval().to(device=device, dtype=dtype)
        text = model.prompts(cats).to(device)
        plain = Variant(
            "plain",
            "plain SD UNet (no GarmNet, no IP-Adapter)",
            lambda: plain_sd_sample(plain_unet, model, text, latents, steps, g),
            b,
            "floor",
            compare=False,
            stages=True,
        )
        first_runs(plain)
        if plain.peak is not None and device.type == "cuda":
            # What a plain-SD process would hold: its UNet, the VAE, the activations (not IGR's other parts).
            # Not on the CPU: freed IGR memory is reused without growing the RSS, so a difference means nothing.
            vae_bytes = sum(p.numel() * p.element_size() for p in model.vae.parameters())
            plain_standalone_peak = plain.peak - before + vae_bytes
        variants.insert(1, plain)

    log(f"timing: {opts.repeats} round(s) over {len(variants)} variants")
    for r in range(opts.repeats):
        for v in variants:
            if v.error is None:
                try:
                    v.times.append(v.call(device, model))
                except Exception as exc:  # e.g. OOM on a later run
                    if v.name == "igr" and not isinstance(exc, torch.OutOfMemoryError):
                        raise
                    v.error = _describe(exc)
                    if v.name == "igr":
                        raise IGRError(
                            f"the IGR restoration failed ({v.error}); try a smaller --size or --batch"
                        ) from None
        log(f"  round {r + 1}/{opts.repeats} done")

    plain_unet = None  # the plain variant's closure reads this cell: frees the UNet
    free_memory(device)

    train = None
    if "train" in wanted:
        short = _host_memory_shortfall(system, device, training=True)
        if short:
            train = {"batch": opts.train_batch or opts.batch, "error": f"skipped: {short}"}
        else:
            gc.collect()
            train = _train_benchmark(system, device, dtype, opts, size, meter, log)

    return build_report(
        opts,
        cfg,
        device,
        dtype,
        size,
        model.latent_shape(1)[2:],  # (h, w): whatever the autoencoder's downsampling (8 for SD1.5, 4 in the demo)
        variants,
        plain_standalone_peak,
        train,
        meter,
        build_seconds,
        processors,
    )


def _train_benchmark(
    system, device, dtype, opts: BenchOptions, size, meter: MemoryMeter, log
) -> dict[str, Any]:
    """``IGRSystem.diffusion_loss`` + backward + AdamW step on one batch; fp32 weights, autocast to ``dtype``."""
    n = opts.train_batch or opts.batch
    log(f"training step (batch {n})")
    data = make_inputs(n, size, opts.seed + 1)
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in data.items()}
    model = system.model
    model.to(dtype=torch.float32).train()
    params = system.trainable_parameters()
    opt = torch.optim.AdamW(params, lr=1e-5)
    autocast = (
        (lambda: torch.autocast(device.type, dtype=dtype))
        if dtype != torch.float32
        else contextlib.nullcontext
    )

    def step() -> float:
        sync(device)
        start = time.perf_counter()
        with autocast():
            loss = system.diffusion_loss(batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        return time.perf_counter() - start

    out: dict[str, Any] = {"batch": n, "precision": "float32" if dtype == torch.float32 else f"{dtype}-mixed"}
    try:
        step()  # warm-up: allocates the optimiser state
        meter.reset()
        times = [step() for _ in range(opts.repeats)]
        out.update(
            seconds_per_step=min(times),
            median_seconds_per_step=statistics.median(times),
            samples_per_second=n / min(times),
            times=times,
            peak_memory_bytes=meter.peak(),
            trainable_parameters=sum(p.numel() for p in params),
        )
    except torch.OutOfMemoryError as exc:
        out["error"] = _describe(exc)
    finally:
        opt.zero_grad(set_to_none=True)
        opt.state.clear()
        model.eval()
        free_memory(device)
    return out


def attention_processors(model) -> dict[str, dict[str, bool]]:
    """Processor classes per part, and whether each computes attention with ``scaled_dot_product_attention``."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    out: dict[str, dict[str, bool]] = {}
    parts = {
        "garmnet": model.garmnet.unet if model.garmnet else None,
        "denoiser": model.denoiser.unet,
        "vae": model.vae.vae,
    }
    for part, module in parts.items():
        if module is None:
            continue
        if not hasattr(module, "attn_processors"):
            continue  # the tiny world's pixel-unshuffle autoencoder has no attention
        classes = {type(p) for p in module.attn_processors.values()}
        out[part] = {
            c.__name__: issubclass(c, AttnProcessor2_0) or c.__name__.endswith("2_0") for c in classes
        }
    return out
