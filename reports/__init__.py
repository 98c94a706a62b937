"""What a run means: paired comparisons, markdown, plots and W&B, read from run directories only."""
