"""What every builder shares: records, validation, grouping, splits, shards, manifest and card."""
