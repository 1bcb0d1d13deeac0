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

Modules: :mod:`~igr.bench.run` (options, variants, the run), :mod:`~igr.bench.variants` (the paths compared),
:mod:`~igr.bench.measure` (timing, memory, the machine), :mod:`~igr.bench.report` (figures and the printed table).
"""

from igr.bench.measure import (
    MemoryMeter,
    Variant,
    device_name,
    free_memory,
    library_versions,
    parse_size,
    resolve_device,
    resolve_dtype,
    stage_timer,
    sync,
)
from igr.bench.report import TARGETS, build_report, format_report
from igr.bench.run import (
    ALL_VARIANTS,
    DEFAULT_VARIANTS,
    OPTIONAL_VARIANTS,
    BenchOptions,
    attention_processors,
    make_inputs,
    random_weights_config,
    run_benchmark,
)
from igr.bench.variants import (
    CompiledDenoiser,
    LiteralConcatProcessor,
    channels_last,
    literal_attention,
    plain_sd_sample,
    restore_reference,
    uncached_unconditional,
    unfused_attention,
    vae_option,
)

__all__ = [
    "ALL_VARIANTS",
    "DEFAULT_VARIANTS",
    "OPTIONAL_VARIANTS",
    "TARGETS",
    "BenchOptions",
    "CompiledDenoiser",
    "LiteralConcatProcessor",
    "MemoryMeter",
    "Variant",
    "attention_processors",
    "build_report",
    "channels_last",
    "device_name",
    "format_report",
    "free_memory",
    "library_versions",
    "literal_attention",
    "make_inputs",
    "parse_size",
    "plain_sd_sample",
    "random_weights_config",
    "resolve_device",
    "resolve_dtype",
    "restore_reference",
    "run_benchmark",
    "stage_timer",
    "sync",
    "uncached_unconditional",
    "unfused_attention",
    "vae_option",
]
