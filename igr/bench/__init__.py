"""Speed and memory benchmarks of garment restoration and training (``igr bench``).

One run builds the model once, with random weights (speed and memory do not depend on weight values), and times
every variant on the same inputs and the same initial noise:

- ``igr`` — :meth:`IGRModel.restore` as shipped: GarmNet once per image, Q-only reference attention (eq. 4
  computed as Attn(Q = F_g, K = V = [F_hl; F_g])), both CFG branches in one batched UNet call, SDPA everywhere;
- ``plain`` — the cost floor: a plain ``UNet2DConditionModel`` with the denoiser's config, default attention
  processors, no GarmNet and no IP-Adapter, the same scheduler, CFG and VAE decode;
- the naive paths the optimisations replace, each checked against ``igr`` for equal output: GarmNet run at every
  step, sequential CFG, the paper's literal concat-then-slice attention, unfused (math) attention;
- candidate optimisations, kept only where they help: channels-last, ``torch.compile`` of the denoiser, VAE
  slicing/tiling, DPM-Solver++ with fewer steps (its quality is measured separately with ``igr eval``);
- a training step (``IGRSystem.diffusion_loss`` + backward + AdamW) and samples/s.

Timing: every variant is warmed up once (excluded), measured once for peak memory, then timed ``repeats`` times
round-robin over all variants so machine noise spreads evenly; the fastest run is reported (noise from other
processes only ever adds time), the median is kept in the JSON. CUDA timings synchronise
around every run; peak memory is ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` on CUDA
and the peak RSS of the process (Linux VmHWM, reset through ``/proc/self/clear_refs``) on the CPU.

Modules: :mod:`~igr.bench.run` (options, the run), :mod:`~igr.bench.names` (the variants' names),
:mod:`~igr.bench.variants` (the paths compared), :mod:`~igr.bench.measure` (timing, memory, the machine),
:mod:`~igr.bench.report` (figures and the printed table).
"""

import importlib

# Public name -> the module that defines it. Imported on first use (PEP 562), so that `igr.bench.names` (and the
# CLI's --help) does not pull in torch and the models.
_EXPORTS = {
    "MemoryMeter": "measure",
    "Variant": "measure",
    "device_name": "measure",
    "free_memory": "measure",
    "library_versions": "measure",
    "parse_size": "measure",
    "resolve_device": "measure",
    "resolve_dtype": "measure",
    "stage_timer": "measure",
    "sync": "measure",
    "ALL_VARIANTS": "names",
    "DEFAULT_VARIANTS": "names",
    "OPTIONAL_VARIANTS": "names",
    "TARGETS": "report",
    "build_report": "report",
    "format_report": "report",
    "BenchOptions": "run",
    "attention_processors": "run",
    "make_inputs": "run",
    "random_weights_config": "run",
    "run_benchmark": "run",
    "CompiledDenoiser": "variants",
    "LiteralConcatProcessor": "variants",
    "channels_last": "variants",
    "literal_attention": "variants",
    "plain_sd_sample": "variants",
    "restore_reference": "variants",
    "uncached_unconditional": "variants",
    "unfused_attention": "variants",
    "vae_option": "variants",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'igr.bench' has no attribute {name!r}")
    return getattr(importlib.import_module(f"igr.bench.{module}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
