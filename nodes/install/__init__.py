"""What install.py runs: standard library only (nothing else may be installed yet)."""
