"""Core machinery: models, data, pruning, training and attacks, free of any search framework."""
