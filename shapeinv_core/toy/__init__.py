"""The toy world: a small Stable-Diffusion-shaped model trained on the project's own rendered chairs.

It is a demo and test world, not a real model: 64x64 chairs in 8 colours and 5 patterns. Its
point is that the method's *effect* (shape kept, edit followed) can be measured offline.

    python -m shapeinv_core.toy train -o DIR      # train one from a seed (wall-clock budget)
    shapeinv generate --model toy ...             # the committed weights (shapeinv_core/toy/model/)
"""

from pathlib import Path

MODEL_DIR = Path(__file__).parent / "model"
