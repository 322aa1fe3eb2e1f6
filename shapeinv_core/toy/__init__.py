"""The toy world: a small Stable-Diffusion-shaped model trained on the project's own rendered chairs.

It is a demo and test world, not a real model: 64x64 chairs in 8 colours and 5 patterns. Its
point is that the method's *effect* (shape kept, edit followed) can be measured offline. Here are
its training (`train`) and its checks (`checks`); the pictures it learns from are drawn by
`chairs.toy_world`, and its committed weights are `models/toy_model/`.

    python -m shapeinv_core.toy train -o DIR      # train one from a seed (wall-clock budget)
    shapeinv generate --model toy ...             # the committed weights
"""
