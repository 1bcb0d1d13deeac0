"""Dataset converters: each builds a list of :class:`~igr.data.converters.common.Item` from a dataset's
own layout; :func:`~igr.data.converters.common.run_conversion` validates, resizes and writes them."""

from igr.data.converters.common import ConvertReport, Item, Skip, print_summary, process_item, run_conversion

__all__ = ["ConvertReport", "Item", "Skip", "print_summary", "process_item", "run_conversion"]
