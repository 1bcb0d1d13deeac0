"""The benchmark's variant names, apart from the code that runs them, so that `igr bench --help` imports no model
code."""

# Variants that run unless skipped, and the opt-in ones.
DEFAULT_VARIANTS = (
    "igr",
    "plain",
    "garmnet-every-step",
    "uncond-uncached",
    "cfg-sequential",
    "literal-concat",
    "unfused-attention",
    "channels-last",
    "dpm-solver",
    "train",
)
OPTIONAL_VARIANTS = ("compiled", "vae-slicing", "vae-tiling")
ALL_VARIANTS = DEFAULT_VARIANTS + OPTIONAL_VARIANTS
