"""One module per family; each lists its model names in ``MODELS``."""
