"""The method: what `*s` is and how it is learned.

`inversion` is the training loop (textual inversion with the cross-attention mask loss), `attention`
captures the cross-attention maps it scores, `appearance` draws the varied views it learns from,
`probe` measures what a word explains of a photo (and picks the `auto` starting word), `tuning` and
`lora` add the optional LoRA phase, `concept` is the learned vectors and their file, `exports` the
files other tools load, `previews` the pictures made while learning, and `workflow` runs one
inversion into a run folder as the CLI and the worker do.
"""
