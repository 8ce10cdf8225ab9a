"""The headless core: every operation, no textual and no rich (tests/test_core_split.py)."""
