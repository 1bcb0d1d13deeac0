"""`igr` sub-commands of the data side (make-shards, check-shards, curate, bench-data)."""
