"""The fastfreeze version, in one place inside the package (the cache fingerprint reads it; keep pyproject.toml in step)."""
__version__ = "0.1.0"
