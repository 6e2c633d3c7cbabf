"""The sample world (world v2) and its scorer: what it renders, how it splits, and what the scorer refuses."""

import numpy as np
import pytest
from scipy import ndimage

from taocache.world import (
    SPLITS,
    agreement,
    all_scenes,
    parse_caption,
    read_image,
    read_video,
    render,
    scenes_of,
    split,
    vocabulary,
)
from taocache.world.scenes import (
    COLOURS,
    DIRECTIONS,
    POSITIONS,
    SHAPES,
    SIZES,
    TRAVEL,
    Scene,
    draw_identity,
    draw_layout,
    subject_mask,
)
from taocache.world.scorer import angle_difference, chroma, read_identity

VIDEO = Scene("triangle", "green", "small", "light", direction="up")
STILL = Scene("square", "blue", "large", "dark", position="left")


# ------------------------------------------------------------------------------------------ clean renders


@pytest.mark.parametrize("video", [False, True])
def test_scorer_reads_every_combination_with_several_seeds(video):
    wrong = []
    for scene in all_scenes(video):
        for seed in (0, 1):
            pixels = render(scene, seed=seed)
            reading = read_video(pixels) if video else read_image(pixels)
            wrong += [(scene.caption, seed, k) for k, ok in agreement(scene, reading).items() if not ok]
    assert wrong == []


def test_scorer_reads_slightly_blurred_noisy_and_uint8_renders():
    rng = np.random.default_rng(0)
    for scene in all_scenes(video=False)[::5]:
        soft = ndimage.gaussian_filter(render(scene, seed=2), (0.6, 0.6, 0))
        noisy = np.clip(soft + rng.normal(0, 0.02, soft.shape), 0, 1)
        assert all(agreement(scene, read_image((noisy * 255).astype(np.uint8))).values()), scene.caption


def test_scorer_notices_the_wrong_scene():
    other = Scene("circle", "red", "small", "dark", position="right")
    result = agreement(STILL, read_image(render(other)))
    assert not any(result[k] for k in ("colour", "shape", "size", "position"))
    assert result["background"]


# ------------------------------------------------------------------------------ what must not score


def _reading_of_nothing(reading):
    return not reading.found and reading.shape is None and reading.colour is None


def test_pure_noise_is_not_a_scene():
    rng = np.random.default_rng(1)
    for scale in (1.0, 0.3):
        noise = (0.5 + scale * (rng.uniform(0, 1, (64, 64, 3)) - 0.5)).astype(np.float32)
        assert _reading_of_nothing(read_image(noise))
    video = rng.uniform(0, 1, (9, 64, 64, 3)).astype(np.float32)
    assert _reading_of_nothing(read_video(video))
    assert not any(agreement(VIDEO, read_video(video)).values())


@pytest.mark.parametrize("sigma", [3.0, 5.0, 8.0])
def test_gaussian_blobs_are_not_shapes(sigma):
    ys, xs = np.mgrid[0:64, 0:64]
    blob = np.exp(-((xs - 32) ** 2 + (ys - 30) ** 2) / (2 * sigma**2))[..., None]
    image = (0.15 * (1 - blob) + blob * np.array([0.9, 0.2, 0.1])).astype(np.float32)
    assert _reading_of_nothing(read_image(image))


def test_a_shape_is_never_read_by_default():
    """A region no template fits (a thin bar, a ring) is not read as any shape."""
    image = np.full((64, 64, 3), 0.15, dtype=np.float32)
    bar = image.copy()
    bar[30:34, 10:54] = (0.9, 0.2, 0.1)
    ys, xs = np.mgrid[0:64, 0:64]
    ring = image.copy()
    r = np.hypot(xs - 32, ys - 32)
    ring[(r > 8) & (r < 12)] = (0.2, 0.3, 0.9)
    for picture in (bar, ring):
        assert read_image(picture).shape is None


def test_a_half_visible_shape_is_not_found():
    scene = Scene("circle", "red", "large", "dark", position="left")
    image = render(scene, seed=0)
    shifted = np.roll(image, -20, axis=1)  # the shape now crosses the left edge
    shifted[:, -20:] = image[:, :20].mean(axis=(0, 1))  # fill the wrapped strip with background
    assert not read_image(shifted).found


def test_motion_must_be_steady_and_long_enough():
    video = render(VIDEO, seed=3)
    assert read_video(video).direction == "up"
    assert read_video(video[::-1]).direction == "down"
    still = np.repeat(video[:1], 9, axis=0)
    assert read_video(still).direction is None
    drift = np.stack([np.roll(video[0], -(3 * f) // 8, axis=0) for f in range(9)])  # 3 px in all
    assert read_video(drift).found and read_video(drift).direction is None
    jump = still.copy()
    jump[-1] = np.roll(video[0], -12, axis=0)  # only the last frame moves
    assert read_video(jump).found and read_video(jump).direction is None


def test_a_video_with_a_frame_lost_is_not_found():
    video = render(VIDEO, seed=4).copy()
    video[4] = video[4].mean(axis=(0, 1))
    assert not read_video(video).found


# ------------------------------------------------------------------------------------- what the seed picks


def test_layout_and_identity_vary_with_the_seed_and_not_with_the_caption():
    identities = {draw_identity(STILL, seed) for seed in range(8)}
    assert len(identities) == 8
    moved = Scene(**{**STILL.__dict__, "position": "right", "size": "small"})
    assert draw_identity(moved, 5).stripe_period == draw_identity(STILL, 5).stripe_period
    assert draw_identity(moved, 5).background_level == draw_identity(STILL, 5).background_level
    layouts = {draw_layout(STILL, seed) for seed in range(8)}
    assert len(layouts) == 8
    assert np.array_equal(render(STILL, seed=5), render(STILL, seed=5))


@pytest.mark.parametrize("direction", sorted(DIRECTIONS))
def test_motion_is_relative_fits_the_frame_and_has_a_drawn_speed(direction):
    scene = Scene("circle", "yellow", "large", "dark", direction=direction)
    starts, travels = [], []
    for seed in range(40):
        layout = draw_layout(scene, seed)
        travel = 8 * np.hypot(layout.dx, layout.dy)
        assert TRAVEL[0] <= travel <= TRAVEL[1]
        travels.append(travel)
        starts.append((layout.x, layout.y))
        mask = subject_mask(scene, seed)
        assert mask[:, 0].max() == 0 and mask[:, -1].max() == 0 and mask[:, :, 0].max() == 0
        assert mask[:, :, -1].max() == 0  # the whole path stays inside the frame
    axis = 0 if DIRECTIONS[direction][0] else 1
    assert np.ptp([s[axis] for s in starts]) > 4  # the start varies along the motion, not only across it
    assert np.ptp([s[1 - axis] for s in starts]) > 10
    assert np.ptp(travels) > 4


def test_still_placement_is_jittered_around_the_named_position():
    xs = [draw_layout(STILL, seed).x for seed in range(40)]
    assert np.ptp(xs) > 4 and all(abs(x - POSITIONS["left"][0] * 64) <= 4 for x in xs)


def test_identity_is_readable_and_separates_seeds():
    scene = Scene("square", "red", "large", "light", position="centre")
    readings = []
    for seed in range(6):
        truth = draw_identity(scene, seed)
        read = read_identity(render(scene, seed))
        assert angle_difference(read.stripe_angle, truth.stripe_angle) < 8
        assert abs(read.stripe_period - truth.stripe_period) < 0.8
        readings.append(read)
    shades = np.array([r.shade for r in readings])
    assert np.ptp(shades, axis=0).max() > 0.05  # the shade within the family differs between seeds


def test_backgrounds_stay_colourless_and_on_their_side():
    for background in ("dark", "light"):
        scene = Scene("circle", "blue", "small", background, position="centre")
        for seed in range(10):
            image = render(scene, seed)
            outside = subject_mask(scene, seed) == 0
            assert chroma(image)[outside].max() < 1e-6
            grey = image[outside].mean(axis=-1)
            assert (grey.max() < 0.35) if background == "dark" else (grey.min() > 0.62)
            assert np.ptp(grey) > 0.03  # the faint wave pattern is there


def test_shades_stay_in_their_colour_family():
    for colour in COLOURS:
        scene = Scene("circle", colour, "large", "dark", position="centre")
        for seed in range(10):
            assert read_image(render(scene, seed)).colour == colour


# ---------------------------------------------------------------------------------------- splits, captions


@pytest.mark.parametrize("video", [False, True])
def test_splits_are_fixed_disjoint_complete_and_train_covers_every_value(video):
    parts = split(video)
    assert tuple(parts) == SPLITS == ("train", "tune", "test")
    captions = {name: {s.caption for s in scenes} for name, scenes in parts.items()}
    assert len(captions["tune"]) == 32 and len(captions["test"]) == 48
    assert sum(map(len, captions.values())) == len(all_scenes(video))
    assert not captions["train"] & captions["tune"] and not captions["train"] & captions["test"]
    assert not captions["tune"] & captions["test"]
    assert split(video) == parts and scenes_of("test", video) == parts["test"]
    places = DIRECTIONS if video else POSITIONS
    for attr, values in (("shape", SHAPES), ("colour", COLOURS), ("size", SIZES)):
        assert {getattr(s, attr) for s in parts["train"]} == set(values)
    assert {s.direction if video else s.position for s in parts["train"]} == set(places)
    with pytest.raises(ValueError, match="must be one of train, tune, test"):
        scenes_of("held-out", video)


def test_captions_round_trip_and_vocabulary():
    for scene in all_scenes(True)[:20] + all_scenes(False)[:20]:
        assert parse_caption(scene.caption) == scene
    assert parse_caption("A small red circle on the left on a dark background").colour == "red"
    with pytest.raises(ValueError, match="not a caption"):
        parse_caption("a purple hexagon")
    words = vocabulary()
    assert "triangle" in words and "moves" in words and len(words) == len(set(words))


def test_scene_validation():
    with pytest.raises(ValueError, match="shape"):
        Scene("hexagon", "red", "small", "dark", position="left")
    with pytest.raises(ValueError, match="either a position"):
        Scene("circle", "red", "small", "dark")
    with pytest.raises(ValueError, match="direction"):
        Scene("circle", "red", "small", "dark", direction="sideways")


def test_render_at_other_sizes():
    video = render(Scene("circle", "yellow", "large", "dark", direction="right"), seed=0, size=128, num_frames=17)
    assert video.shape == (17, 128, 128, 3) and video.dtype == np.float32
    assert 0.0 <= video.min() and video.max() <= 1.0
    assert read_video(video).direction == "right"


# ------------------------------------------------------------------------------- identity beyond the caption


def test_identity_is_kept_by_the_same_seed_elsewhere_and_lost_by_a_redraw():
    import dataclasses

    from taocache.world.identity import compare_identity

    for scene in scenes_of("tune", video=False)[:6]:
        moved = dataclasses.replace(scene, position="centre" if scene.position != "centre" else "left",
                                    size="small" if scene.size == "large" else "large")
        image = render(scene, seed=3)
        soft_move = ndimage.gaussian_filter(render(moved, seed=3), (0.6, 0.6, 0))
        assert compare_identity(image, soft_move).kept, scene.caption  # this subject, moved and resized
        redraw = compare_identity(image, render(scene, seed=1003))  # the same caption, another subject
        assert redraw is not None and not redraw.kept, scene.caption


def test_identity_refuses_a_washed_out_or_missing_subject():
    from taocache.world.identity import compare_identity

    image = render(STILL, seed=2)
    flat = image.copy()
    mask = subject_mask(STILL, seed=2) > 0
    flat[mask] = image[mask].mean(axis=0)  # the same shade, the stripes gone
    comparison = compare_identity(image, flat)
    assert comparison.stripe_contrast_ratio < 0.5 and not comparison.kept
    blank = np.full_like(image, image[0, 0])
    assert compare_identity(image, blank) is None


def test_background_fidelity_ignores_the_subjects_and_sees_the_rest():
    from taocache.world.identity import background_fidelity, subject_region

    scene = Scene("circle", "yellow", "small", "light", position="left")
    moved = Scene("circle", "yellow", "small", "light", position="right")
    image, result = render(scene, seed=4), render(moved, seed=4)
    exclude = subject_region(image) | subject_region(result)
    same = background_fidelity(image, result, exclude)
    assert same["psnr"] > 45 and same["ssim"] > 0.999  # the same background, the subject elsewhere
    other = background_fidelity(image, render(moved, seed=5), exclude)
    assert other["psnr"] < 35 and other["ssim"] < same["ssim"]  # another seed's grey and waves
    assert background_fidelity(image, result, np.ones(image.shape[:2], bool)) == {"psnr": None, "ssim": None}


def test_the_chance_that_a_redraw_keeps_identity_is_small():
    from taocache.world.identity import redraw_pass_rate

    assert redraw_pass_rate(scenes_of("tune", video=False)[:8], seeds=2) <= 0.1
