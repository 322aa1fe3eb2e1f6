import numpy as np
import pytest

from helpers import chair_like, small_config, tiny_model
from shapeinv_core.config import GenerationConfig
from shapeinv_core.errors import InputError
from shapeinv_core.generation.generate import check_prompts, generate
from shapeinv_core.method.inversion import invert

PROMPTS = ["a red chair in the shape of *s", "a leopard-print chair in the shape of *s"]


@pytest.fixture(scope="module")
def model_and_concept():
    model = tiny_model()
    image, mask = chair_like()
    return model, invert(model, image, mask, small_config(steps=2))


def _pixels(result) -> np.ndarray:
    return np.asarray(result.image, dtype=np.int16)


def test_images_per_prompt_with_per_image_seeds_whatever_the_batch(model_and_concept):
    model, concept = model_and_concept
    settings = {"num_images": 2, "seed": 5, "steps": 3}
    batched = generate(model, concept, PROMPTS, GenerationConfig(batch_size=4, **settings))
    one_by_one = generate(model, concept, PROMPTS, GenerationConfig(batch_size=1, **settings))
    assert [(r.prompt, r.seed) for r in batched] == [(p, s) for p in PROMPTS for s in (5, 6)]
    assert all(r.image.size == (64, 64) for r in batched)
    for a, b in zip(batched, one_by_one):
        assert np.abs(_pixels(a) - _pixels(b)).max() <= 2  # same seeds, batching only changes rounding
    assert np.abs(_pixels(batched[0]) - _pixels(batched[1])).mean() > 1, "another seed, another image"


def test_the_learned_vectors_change_the_image(model_and_concept):
    model, concept = model_and_concept
    settings = GenerationConfig(steps=3)
    learned = generate(model, concept, PROMPTS[:1], settings)[0]
    concept_zero = type(concept)(token=concept.token, vectors=concept.vectors * 0, settings=concept.settings)
    other = generate(model, concept_zero, PROMPTS[:1], settings)[0]
    assert np.abs(_pixels(learned) - _pixels(other)).mean() > 0.5


def test_size_and_negative_prompt_settings(model_and_concept):
    model, concept = model_and_concept
    result = generate(model, concept, PROMPTS[:1],
                      GenerationConfig(steps=2, height=64, width=128, negative_prompt="blurry"))
    assert result[0].image.size == (128, 64)


def test_a_prompt_without_the_placeholder_is_refused_with_an_example():
    with pytest.raises(InputError, match=r"in the shape of \*s"):
        check_prompts(["a red chair"], "*s")
    with pytest.raises(InputError, match="No prompt"):
        check_prompts(["  "], "*s")
    assert check_prompts([" a *s ", ""], "*s") == ["a *s"]


def test_a_concept_for_another_text_encoder_is_refused(model_and_concept):
    model, concept = model_and_concept
    wrong = type(concept)(token="*s", vectors=concept.vectors.new_zeros(1, 768), settings=concept.settings)
    with pytest.raises(InputError, match="768-dimensional"):
        generate(model, wrong, PROMPTS[:1], GenerationConfig(steps=2))
