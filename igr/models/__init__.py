"""IGR model components, one module per paper part (see each module's docstring)."""

from igr.models.model import Conditions, IGRModel, Inputs, build_model, build_parts, parameter_counts

__all__ = ["Conditions", "IGRModel", "Inputs", "build_model", "build_parts", "parameter_counts"]
