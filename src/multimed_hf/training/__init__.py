"""Training layer: task sampling, the multitask Trainer, runs, the Table 1 benchmark and its report."""
