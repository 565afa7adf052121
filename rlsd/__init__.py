"""rlsd: large-scale reinforcement learning for text-to-image diffusion models.

See docs/architecture.md for the module contracts.
"""

import warnings as _warnings

__version__ = "0.1.0"

# transformers and huggingface_hub import tqdm.auto, which in a Jupyter kernel without ipywidgets warns (with
# its install path) and then falls back to the plain text bar that rlsd itself uses: the warning says nothing
# a user can act on, so it is silenced by its message, before any of those imports.
_warnings.filterwarnings("ignore", message="IProgress not found", module="tqdm")
