"""``igr`` sub-commands owned by the metrics package."""
