"""ShapeInversion: learn an object's shape from one photo as a Stable Diffusion pseudo-word."""

__version__ = "0.1.0"
