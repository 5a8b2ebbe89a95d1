"""The version of fastpg (its own module, so that the library imports it without the package root)."""

__version__ = "0.1.0"
