"""Shape guidance: sampling that weighs what `*s` adds to a prompt.

Classifier-free guidance moves each step from the unconditional prediction u toward the prompt's c.
Shape guidance adds a second move, from the prediction w for the same prompt without its `*s` phrase
("a red chair") toward c ("a red chair in the shape of *s"), as Composable Diffusion (Liu et al., 2022)
adds one guidance term per concept:

    eps = u + guidance * (c - u) + shape_guidance * (c - w)

c - w is what the learned word alone changes in the prediction: on a model that draws a generic
chair for "chair", that is the uploaded chair's shape, so the edit's look still comes from its own
words while `*s` speaks louder. It costs one more UNet pass over the prompt rows per step.

The pipelines combine [u; c] themselves, so the hook hands them u' = u + shape_guidance * (c - w) / (1 - guidance)
in place of u, for which their u' + guidance * (c - u') is the sum above.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


class ShapeGuidance:
    """A UNet forward hook: adds shape_guidance * (c - w) to the guided prediction of each step."""

    def __init__(self, pipe, without: dict[str, torch.Tensor], scale: float):
        self.pipe, self.without, self.scale = pipe, without, scale
        self.busy = False  # the hook's own UNet pass must not be guided again

    def __call__(self, unet, args: tuple, kwargs: dict, output: tuple) -> tuple:
        """The pipelines call the UNet with return_dict=False, so `output` is (prediction,)."""
        if self.busy:
            return output
        prediction = output[0]
        guided = self.pipe.do_classifier_free_guidance
        rows = prediction.shape[0] // 2 if guided else 0  # [unconditional; text] under guidance
        sample, timestep = args[0] if args else kwargs["sample"], args[1] if len(args) > 1 else kwargs["timestep"]
        inner = dict(kwargs, encoder_hidden_states=self.without["prompt_embeds"].to(prediction.dtype),
                     return_dict=False)
        inner.pop("sample", None)
        inner.pop("timestep", None)
        if "add_text_embeds" in self.without:  # SDXL: its pooled text embedding changes with the prompt too
            added = dict(kwargs["added_cond_kwargs"])
            added["text_embeds"] = self.without["add_text_embeds"].to(prediction.dtype)
            added["time_ids"] = added["time_ids"][rows:]
            inner["added_cond_kwargs"] = added
        self.busy = True
        try:
            with torch.no_grad():
                plain = unet(sample[rows:], timestep, **inner)[0]
        finally:
            self.busy = False
        text = prediction[rows:]
        push = self.scale * (text - plain)
        if guided:
            changed = torch.cat([prediction[:rows] + push / (1.0 - self.pipe.guidance_scale), text])
        else:
            changed = text + push
        return (changed, *output[1:])


@contextmanager
def shape_guided(pipe, without: dict[str, torch.Tensor], scale: float) -> Iterator[ShapeGuidance]:
    """While open, every UNet call of `pipe` is shape-guided toward `without`'s prompts (one per image row)."""
    guidance = ShapeGuidance(pipe, without, scale)
    handle = pipe.unet.register_forward_hook(guidance, with_kwargs=True)
    try:
        yield guidance
    finally:
        handle.remove()
