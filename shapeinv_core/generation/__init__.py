"""From a learned `*s` to images: edit prompts drawn with the concept (`generate`) and the weight
sweep that learns and draws one concept per mask-loss weight (`sweep`)."""
