"""Raw layer: the source tables copied once, immutably, into the lake."""
