"""Does an image show what its prompt asked for? The toy world's exact substitutes for CLIP-T.

- `dominant_colour` (in `chairs.colours`): the named colour most of the object's pixels have (HSV rules).
- `PatternClassifier`: a small CNN trained on the renderer's own images (object only, background
  greyed out), tested on rendered chairs of held-out families before it is trusted.
- `one_object`: whether the project's mask extractor finds one object (a chair, not noise).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..chairs.toy_world import COLOURS, HELD_OUT_FAMILIES, PATTERNS, TRAIN_FAMILIES, render_toy_chair
from ..errors import InputError
from ..masks import extract_mask
from ..masks.fallback import WHOLE, largest_part_share


@dataclass
class ObjectCheck:
    mask: Image.Image | None  # what the extractor found (None when it found nothing usable)
    one_object: bool
    why: str


def one_object(image: Image.Image, min_share: float = WHOLE, rembg_model: str | None = None) -> ObjectCheck:
    """Run the project's mask extractor; one object = its largest 4-connected part holds >= `min_share` of the mask.

    4-connected, so checks touching only at their corners do not count as one object.
    `rembg_model` as in `extract_mask` (e.g. "u2netp" when its weights are in rembg's folder); by
    default the extractor's own choice, which offline without weights is the classical fallback.
    """
    try:
        # never downloads: the same answer offline and online
        mask = extract_mask(image, rembg_model=rembg_model, fetch=False).mask
    except InputError as error:
        return ObjectCheck(None, False, str(error))
    share = largest_part_share(np.asarray(mask) > 127, connectivity=4)
    if share == 0.0:
        return ObjectCheck(mask, False, "empty mask")
    return ObjectCheck(mask, share >= min_share, f"largest part {share:.0%}")


class _PatternNet(torch.nn.Module):
    def __init__(self, classes: int):
        super().__init__()
        layers = []
        for inputs, outputs, stride in ((5, 32, 1), (32, 32, 2), (32, 64, 1), (64, 64, 2), (64, 96, 2)):
            layers += [torch.nn.Conv2d(inputs, outputs, 3, stride=stride, padding=1), torch.nn.BatchNorm2d(outputs),
                       torch.nn.ReLU()]
        self.features = torch.nn.Sequential(*layers)
        self.head = torch.nn.Linear(96, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


class PatternClassifier:
    """Which of PATTERNS the object wears: a small CNN trained on rendered chairs (exact masks)."""

    def __init__(self, net: _PatternNet):
        self.net = net.eval()

    @staticmethod
    def inputs(images: list[Image.Image], masks: list) -> torch.Tensor:
        """The object only, as texture: brightness relative to the object's own, hue offsets, and the mask.

        Relative brightness makes a pattern look the same in every colour (a first version fed raw
        colours and reached only 45 % on held-out chairs, confusing plain with wooden).
        """
        batch = []
        for image, mask in zip(images, masks):
            pixels = np.asarray(image.convert("RGB").resize((64, 64)), dtype=np.float32) / 255
            inside = np.asarray(Image.fromarray(np.asarray(mask)).convert("L").resize((64, 64))) > 127
            brightness = pixels.mean(axis=-1)
            object_pixels = brightness[inside] if inside.any() else brightness.ravel()
            relative = (brightness - object_pixels.mean()) / (object_pixels.std() + 0.05)
            hue = (pixels - pixels.mean(axis=-1, keepdims=True)) * 4
            features = np.concatenate([relative[..., None], hue], axis=-1) * inside[..., None]
            batch.append(np.concatenate([features, inside[..., None].astype(np.float32)], axis=-1))
        return torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float()

    @classmethod
    def train(cls, count: int = 2000, epochs: int = 10, seed: int = 0, batch: int = 64) -> PatternClassifier:
        """Train on `count` rendered chairs of the training families (seeded, so it is reproducible)."""
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        chairs = [render_toy_chair(10_000_000 + seed * 100_000 + i, pattern=PATTERNS[i % len(PATTERNS)],
                                   family=TRAIN_FAMILIES[int(rng.integers(len(TRAIN_FAMILIES)))]) for i in range(count)]
        x = cls.inputs([c.image for c in chairs], [c.mask for c in chairs])
        y = torch.tensor([PATTERNS.index(c.pattern) for c in chairs])
        net = _PatternNet(len(PATTERNS))
        optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3)
        net.train()
        for _ in range(epochs):
            order = torch.randperm(count)
            for start in range(0, count, batch):
                pick = order[start:start + batch]
                inputs = x[pick].flip(-1) if rng.random() < 0.5 else x[pick]
                loss = F.cross_entropy(net(inputs), y[pick])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        return cls(net)

    @classmethod
    def cached(cls, count: int = 2000, epochs: int = 10, seed: int = 0) -> PatternClassifier:
        """`train`, once per settings: later calls load its weights from the cache folder (safetensors)."""
        from safetensors.torch import load_file, save_file

        from ..models.cache import cache_dir

        path = cache_dir() / f"toy-pattern-classifier-v2-{count}-{epochs}-{seed}.safetensors"
        if path.is_file():
            net = _PatternNet(len(PATTERNS))
            net.load_state_dict(load_file(path))
            return cls(net)
        classifier = cls.train(count, epochs, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(classifier.net.state_dict(), path)
        return classifier

    @torch.no_grad()
    def predict(self, images: list[Image.Image], masks: list) -> list[str]:
        if not images:
            return []
        logits = self.net(self.inputs(images, masks))
        return [PATTERNS[i] for i in logits.argmax(dim=1).tolist()]


def held_out_test_set(count: int, seed: int = 1) -> list:
    """Rendered chairs of the held-out families, every colour and pattern: what a check is tested on."""
    rng = np.random.default_rng(seed)
    colours = list(COLOURS)
    return [render_toy_chair(20_000_000 + seed * 100_000 + i, family=HELD_OUT_FAMILIES[i % len(HELD_OUT_FAMILIES)],
                             colour=colours[int(rng.integers(len(colours)))], pattern=PATTERNS[i % len(PATTERNS)])
            for i in range(count)]


def confusion_table(truth: list[str], predicted: list[str], labels: list[str]) -> str:
    """A markdown confusion table: rows = asked for, columns = found."""
    found = labels + sorted(set(predicted) - set(labels))
    lines = ["| asked \\ found | " + " | ".join(found) + " |", "|---" * (len(found) + 1) + "|"]
    for label in labels:
        row = [sum(1 for t, p in zip(truth, predicted) if t == label and p == f) for f in found]
        lines.append(f"| {label} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines)
