"""The procedural chairs: deterministic, exact masks, shadows outside the mask, the CLI writes examples."""

import numpy as np
import pytest

from shapeinv_core.chairs.draw import BACKGROUNDS, CONFETTI, main, render_chair


def test_same_seed_same_pixels_other_seed_other_chair():
    a, mask_a = render_chair(3, size=128)
    b, mask_b = render_chair(3, size=128)
    c, mask_c = render_chair(4, size=128)
    assert np.array_equal(np.asarray(a), np.asarray(b)) and np.array_equal(np.asarray(mask_a), np.asarray(mask_b))
    assert not np.array_equal(np.asarray(mask_a), np.asarray(mask_c))


@pytest.mark.parametrize("background", BACKGROUNDS)
def test_mask_is_binary_and_matches_the_drawn_chair(background):
    image, mask = render_chair(7, size=192, background=background, colour=(0.9, 0.1, 0.1))
    assert image.mode == "RGB" and mask.mode == "L" and image.size == mask.size == (192, 192)
    m = np.asarray(mask) > 127
    assert set(np.unique(np.asarray(mask))) == {0, 255}
    assert 0.03 < m.mean() < 0.5
    rgb = np.asarray(image).astype(int)
    redness = rgb[..., 0] - rgb[..., 2]
    # inside the mask (away from edges) the chair's red; outside no pixel is chair-red
    assert np.median(redness[m]) > 60 and (redness[~m] > 100).mean() < 0.002


def test_shadow_darkens_the_floor_but_is_not_in_the_mask():
    image, mask = render_chair(5, size=256, background="plain", colour=(0.9, 0.1, 0.1), noise=False)
    m = np.asarray(mask) > 127
    gray = np.asarray(image.convert("L")).astype(int)
    wall = np.median(gray[:10])
    rows = np.nonzero(m.any(axis=1))[0]
    below_seat = gray[rows.max() - 10 : rows.max() + 5][~m[rows.max() - 10 : rows.max() + 5]]
    assert below_seat.min() < wall - 25  # a visible shadow that the mask leaves out


@pytest.mark.parametrize("seed", range(6))
def test_confetti_is_a_new_colour_every_few_pixels(seed):
    """Every few pixels another colour, and neither a grid nor one fleck size for every image."""
    image, mask = render_chair(seed, size=256, background=CONFETTI)
    rgb = np.asarray(image).astype(float)
    wall = rgb[:40, :40]
    steps = np.abs(np.diff(wall, axis=1)).sum(axis=2)
    assert 0.12 < (steps > 30).mean() < 0.8  # colour changes within a row, every 1.5-6 px
    assert len(np.unique(wall.reshape(-1, 3).round(-1), axis=0)) >= 4


def test_confetti_fleck_sizes_and_palettes_vary():
    walls = [np.asarray(render_chair(seed, size=256, background=CONFETTI)[0]).astype(float)[:40, :40]
             for seed in range(6)]
    change = [(np.abs(np.diff(wall, axis=1)).sum(axis=2) > 30).mean() for wall in walls]
    assert max(change) > 2 * min(change)  # fine and coarse flecks
    means = np.array([wall.reshape(-1, 3).mean(axis=0) for wall in walls])
    assert np.ptp(means, axis=0).max() > 40  # different palettes


def test_cast_shadow_darkens_between_the_legs_only():
    plain, mask = render_chair(1, size=256, noise=False)
    shaded, same_mask = render_chair(1, size=256, noise=False, cast_shadow=True)
    assert np.array_equal(np.asarray(mask), np.asarray(same_mask))  # the same chair, shadow outside its mask
    darker = np.asarray(plain.convert("L")).astype(int) - np.asarray(shaded.convert("L")).astype(int)
    m = np.asarray(mask) > 127
    assert (darker[m] != 0).mean() < 0.05 and darker[~m].max() > 60  # inside: only anti-aliased edge pixels


def test_thin_legs_are_thin():
    _, mask = render_chair(2, size=512, thin_legs=True)
    m = np.asarray(mask) > 127
    bottom = np.nonzero(m.any(axis=1))[0].max()
    row = m[bottom - 20]
    runs = np.diff(np.flatnonzero(np.diff(np.r_[0, row.astype(int), 0])))[::2]
    assert len(runs) >= 2 and runs.max() <= 5


def test_cli_writes_examples(tmp_path):
    main(["--out", str(tmp_path), "--count", "2", "--size", "96"])
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["chair_01.png", "chair_01_mask.png", "chair_02.png", "chair_02_mask.png"]
