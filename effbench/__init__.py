"""EffBench: a benchmark suite and leaderboard for efficient deep learning in Keras."""

__version__ = "0.1.0"
