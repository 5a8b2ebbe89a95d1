"""fastpg benchmarks against peer implementations measured in the same run (``python -m bench``)."""
