"""Training: the point-in-time training set, the model, its evaluation gates and its promotion."""
