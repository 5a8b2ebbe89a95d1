"""The ``fastpg`` command line (click), installed as package ``fastpg_cli``."""
