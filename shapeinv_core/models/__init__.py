"""Models: loading a pipeline (hub id, diffusers folder or single file), what differs between
model families (SD 1.x/2.x and SDXL), and the project's own small models: `tiny` (random weights,
for tests) and the toy world's trained weights in `toy_model/`.

The names most callers need are importable from here: `from shapeinv_core.models import load_model`.
"""

from .cache import cache_dir
from .loading import DEFAULT_MODEL, TINY, TINY_SDXL, TOY, LoadedModel, choose_device, load_model

__all__ = ["DEFAULT_MODEL", "TINY", "TINY_SDXL", "TOY", "LoadedModel", "cache_dir", "choose_device", "load_model"]
