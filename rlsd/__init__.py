"""rlsd: large-scale reinforcement learning for text-to-image diffusion models.

See docs/architecture.md for the module contracts.
"""

__version__ = "0.1.0"
