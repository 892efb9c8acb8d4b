"""arq 0.28.0's own test suite as the engine's contract: its plugin, pins and divergences."""
