"""The procedural chairs: deterministic, exact masks, shadows outside the mask, the CLI writes examples."""

import numpy as np
import pytest

from shapeinv_core.chairs import BACKGROUNDS, main, render_chair


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
