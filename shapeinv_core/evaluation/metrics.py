"""Mask-IoU, CLIP-T and CLIP-I: how well a learned `*s` keeps the shape, and how well it still edits.

- Mask-IoU (shape fidelity): the object mask of a generated image against the input mask.
- CLIP-T (editability): a generated image against its prompt with the placeholder phrase removed,
  so the score asks "is it a leopard-print chair?" and not "does it match the word *s?".
- CLIP-I (reconstruction): a generated image against the input image.

CLIP scores are plain cosine similarities of normalized embeddings (no x100 or x2.5 rescaling),
the scale of the figures in DESIGN.md. A missing CLIP model never stops a sweep:
`load_clip_scorer` returns `(None, reason)` and the CLIP columns stay empty.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import InputError, ModelLoadError, first_line
from ..masks.rembg_model import offline_reason
from ..models.loading import BUILD_LOCK, TINY, choose_device
from ..models.tiny import build_tiny_clip

HUB_HOST = ("huggingface.co", 443)

DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"
DEFAULT_PLACEHOLDER_RULE = " in the shape of {token}"
REGEX_PREFIX = "re:"

MaskLike = Image.Image | np.ndarray


# --- Mask-IoU ---------------------------------------------------------------------------------


def mask_iou(a: MaskLike, b: MaskLike, size: tuple[int, int] | None = None) -> float:
    """Intersection over union of two binary masks, compared at `size` (width, height; default: a's size).

    Both empty counts as 1.0: the masks agree exactly (no object in either). Masks of another
    aspect ratio are stretched to `size`, so pass masks of the frame the images were made at.
    """
    mask_a = _binary_mask(a, size)
    mask_b = _binary_mask(b, (mask_a.shape[1], mask_a.shape[0]))
    union = np.logical_or(mask_a, mask_b).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(mask_a, mask_b).sum() / union)


def shape_specificity(found: MaskLike, own: MaskLike, others: list[MaskLike]) -> tuple[float, float]:
    """(IoU with the object's own mask, mean IoU with other objects' masks) for a generated silhouette.

    Their difference is the specificity: a generic chair already overlaps any chair's mask (IoU
    about 0.4 in the toy world), so only the margin over the *other* chairs says that the image
    carries this chair's shape. 0 when the word draws the same thing whatever it was learned from.
    """
    if not others:
        raise ValueError("Specificity needs at least one other object's mask to compare against.")
    size = _binary_mask(own).shape[::-1]
    return mask_iou(found, own, size), float(np.mean([mask_iou(found, other, size) for other in others]))


def object_silhouette(image: Image.Image, network: str = "u2netp") -> np.ndarray | None:
    """A generated object's silhouette for scoring (None when nothing is found); never downloads.

    The classical fallback is the most exact on rendered chairs (mean IoU 0.92) but now and then
    takes in the wall; the small network (refined by GrabCut) is never far off (min 0.60) but
    blurrier (0.86). So: the fallback, unless it disagrees with the network (IoU < 0.6) or finds
    nothing; without the network's weights, the fallback alone.
    """
    classical, learned = _mask_or_none(image, method="fallback"), _mask_or_none(image, rembg_model=network)
    if classical is None or (learned is not None and mask_iou(classical, learned) < 0.6):
        return learned
    return classical


def _mask_or_none(image: Image.Image, **how) -> np.ndarray | None:
    from ..masks import extract_mask

    try:
        return np.asarray(extract_mask(image, fetch=False, **how).mask) > 127
    except InputError:  # an empty or full-frame answer, or no weights: no object found this way
        return None


def generated_mask_iou(image: Image.Image, input_mask: MaskLike, method: str = "auto") -> float:
    """Mask-IoU of a generated image: extract its object mask, compare it with the input mask at the input's size."""
    from ..masks import extract_mask  # lazily: rembg and friends load only when a mask is needed

    try:
        generated = extract_mask(image, method=method).mask
    except InputError:  # no object found (empty or whole-frame mask): nothing of the shape was kept
        return 0.0
    return mask_iou(input_mask, generated)


def _binary_mask(mask: MaskLike, size: tuple[int, int] | None = None) -> np.ndarray:
    """A 2-D bool array at `size` (default: its own). Images follow `masks.binary_mask`'s rule.

    Arrays: bool as is; values up to 1 (0/1 or floats in [0, 1]) are on above 0.5; 0-255 values above 127.
    """
    from ..masks import binary_mask

    if isinstance(mask, np.ndarray):
        array = mask[..., 0] if mask.ndim == 3 and mask.shape[-1] == 1 else mask
        if array.ndim != 2:
            raise ValueError(f"A mask must be 2-D (height, width); got shape {mask.shape}.")
        if array.dtype != bool:
            array = array.astype(np.float32)
            array = array > (0.5 if array.max(initial=0.0) <= 1.0 else 127.0)
        mask = Image.fromarray(array.astype(np.uint8) * 255, mode="L")
    return binary_mask(mask, size or mask.size)


# --- the placeholder rule for CLIP-T ------------------------------------------------------------


def strip_placeholder(prompt: str, placeholder: str = "*s", rule: str | re.Pattern = DEFAULT_PLACEHOLDER_RULE) -> str:
    """The prompt CLIP-T compares against: the placeholder phrase removed.

    `rule` is a phrase with `{token}` (matched case-insensitively, any spacing), a string starting
    with "re:" (a regex; `{token}` in it stands for the escaped placeholder) or a compiled regex.
    A placeholder the rule leaves behind (or a prompt without the phrase) loses just the token,
    so CLIP never scores the pseudo-word itself.
    "a leopard-print chair in the shape of *s" -> "a leopard-print chair".
    """
    stripped, by_rule = _rule_pattern(rule, placeholder).subn("", prompt)
    stripped, by_token = re.subn(rf"(?<!\S){re.escape(placeholder)}(?!\w)", "", stripped)
    return _tidy(stripped) if by_rule or by_token else prompt.strip()


def _rule_pattern(rule: str | re.Pattern, placeholder: str) -> re.Pattern:
    if isinstance(rule, re.Pattern):
        return rule
    if rule.startswith(REGEX_PREFIX):
        return re.compile(rule[len(REGEX_PREFIX):].replace("{token}", re.escape(placeholder)))
    words = [re.escape(word) for word in rule.replace("{token}", placeholder).split()]
    if not words:
        raise ValueError("The placeholder rule is empty. Use a phrase such as ' in the shape of {token}'.")
    return re.compile(r"\s*(?<!\S)" + r"\s+".join(words) + r"(?!\w)", re.IGNORECASE)


def _tidy(text: str) -> str:
    """Collapse the spaces and stray punctuation a removal leaves behind."""
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s+([,.;:!?])", r"\1", text)
    text = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", text)
    return text.strip().strip(",;:").strip()


# --- CLIP-T and CLIP-I -------------------------------------------------------------------------


class ClipScorer:
    """A CLIP model with its tokenizer and image processor, scoring images in batches."""

    def __init__(self, model, tokenizer, image_processor, device: torch.device, batch_size: int = 16,
                 source: str = ""):
        self.model = model.eval().to(device)
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.device = device
        self.batch_size = batch_size
        self.source = source

    @classmethod
    def from_pretrained(cls, name: str = DEFAULT_CLIP_MODEL, device: str = "auto",
                        batch_size: int = 16) -> ClipScorer:
        """Load `tiny`, a local folder or a hub id (the hub cache when offline). Raises `ModelLoadError`."""
        from transformers import CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

        torch_device, _ = choose_device(device, "fp32")  # fp32 everywhere: scores should not depend on the card
        source, local = _resolve_clip_source(name)
        offline = None if local else offline_reason(HUB_HOST, "the hub's models")
        try:  # offline, the hub is not asked at all (no retries): the cache has the model or CLIP-T is off
            kwargs = {"local_files_only": True} if local or offline else {}
            with BUILD_LOCK:
                model = CLIPModel.from_pretrained(source, use_safetensors=True, **kwargs)
            tokenizer = CLIPTokenizer.from_pretrained(source, **kwargs)
            image_processor = CLIPImageProcessorPil.from_pretrained(source, **kwargs)
        except Exception as error:  # transformers raises many types; the user needs one message
            if offline:
                raise ModelLoadError(
                    f"CLIP-T is off: the CLIP model {name!r} is not in the Hugging Face cache and {offline}. Fixes: "
                    f"`hf download {name}` once with network, --clip-model with a local folder, or --clip-model none."
                ) from error
            where = f"the folder {source}" if local else f"{name!r} from the Hugging Face hub or its cache"
            cause = first_line(error).rstrip(".")
            raise ModelLoadError(
                f"Could not load the CLIP model {where}: {cause}. Fixes: download it once with "
                f"network (`hf download {DEFAULT_CLIP_MODEL}`), pass a local folder with a safetensors CLIPModel, "
                "its tokenizer and preprocessor_config.json, or use `tiny` for an offline test model."
            ) from error
        return cls(model, tokenizer, image_processor, torch_device, batch_size, source=str(name))

    @torch.no_grad()
    def text_embeddings(self, prompts: Sequence[str]) -> torch.Tensor:
        """Unit-length text embeddings, one row per prompt (truncated to CLIP's 77 tokens)."""
        rows = []
        for start in range(0, len(prompts), self.batch_size):
            batch = self.tokenizer(list(prompts[start:start + self.batch_size]), padding=True, truncation=True,
                                   max_length=self.tokenizer.model_max_length, return_tensors="pt").to(self.device)
            features = self.model.get_text_features(input_ids=batch["input_ids"],
                                                    attention_mask=batch["attention_mask"])
            rows.append(_pooled(features))
        return _normalized(torch.cat(rows))

    @torch.no_grad()
    def image_embeddings(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Unit-length image embeddings, one row per image (CLIP's resize, centre crop and normalization)."""
        rows = []
        for start in range(0, len(images), self.batch_size):
            batch = [image.convert("RGB") for image in images[start:start + self.batch_size]]
            pixels = self.image_processor(images=batch, return_tensors="pt")["pixel_values"].to(self.device)
            rows.append(_pooled(self.model.get_image_features(pixel_values=pixels)))
        return _normalized(torch.cat(rows))

    def clip_t(self, images: Sequence[Image.Image], prompts: str | Sequence[str]) -> list[float]:
        """CLIP-T per image: cosine similarity with its prompt (one prompt for all, or one per image).

        Pass prompts with the placeholder already removed (`strip_placeholder`).
        """
        prompts = [prompts] * len(images) if isinstance(prompts, str) else list(prompts)
        if len(prompts) != len(images):
            raise ValueError(f"clip_t needs one prompt per image (or one for all): got {len(prompts)} prompts "
                             f"for {len(images)} images.")
        if not images:
            return []
        return _paired_cosines(self.image_embeddings(images), self.text_embeddings(prompts))

    def clip_i(self, images: Sequence[Image.Image], reference_image: Image.Image) -> list[float]:
        """CLIP-I per image: cosine similarity of its CLIP image embedding with the reference (input) image's."""
        if not images:
            return []
        embeddings = self.image_embeddings([reference_image, *images])
        return (embeddings[1:] @ embeddings[0]).tolist()


def load_clip_scorer(name: str = DEFAULT_CLIP_MODEL, device: str = "auto") -> tuple[ClipScorer | None, str | None]:
    """`(scorer, None)`, or `(None, one-line reason)` when CLIP cannot be loaded: CLIP scores are optional."""
    try:
        return ClipScorer.from_pretrained(name, device=device), None
    except Exception as error:  # anything at all: the sweep must still finish without CLIP columns
        reason = first_line(error).rstrip(".")
        if not isinstance(error, ModelLoadError):
            reason = f"Could not load the CLIP model {name!r}: {reason}"
        return None, f"{reason}. CLIP-T and CLIP-I are left empty."


def _resolve_clip_source(name: str) -> tuple[str, bool]:
    """(what to pass to from_pretrained, whether it is a local folder)."""
    if name == TINY:
        return str(build_tiny_clip()), True
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path), True
    if path.exists():
        raise ModelLoadError(f"{path} is a file; a CLIP model is a folder (config.json, model.safetensors, "
                             "tokenizer and preprocessor files). Pass its folder, a hub id, or `tiny`.")
    if name.startswith(("/", "./", "../", "~", "\\")) or re.match(r"^[A-Za-z]:[\\/]", name):
        raise ModelLoadError(f"CLIP model folder not found: {path}. Check the path, or pass a hub id such as "
                             f"{DEFAULT_CLIP_MODEL!r}, or `tiny`.")
    return name, False


def _pooled(features) -> torch.Tensor:
    """transformers 5 returns an output object from get_*_features (projected embeddings in pooler_output)."""
    return features if isinstance(features, torch.Tensor) else features.pooler_output


def _normalized(embeddings: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(embeddings.float(), dim=-1)


def _paired_cosines(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    return (a * b).sum(dim=-1).tolist()
