"""The ``igr`` sub-commands (see :mod:`igr.cli`)."""

# Where `make demo` writes its pipeline: the --model default of the commands that run a model (igr restore).
DEMO_PIPELINE = "outputs/demo/pipeline"
