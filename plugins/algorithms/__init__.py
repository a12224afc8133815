"""The built-in algorithms, one module (and one entry point) each."""
