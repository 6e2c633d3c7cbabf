import numpy as np
import pytest

from taocache.world import agreement, all_scenes, parse_caption, read_image, read_video, render, split, vocabulary
from taocache.world.scenes import COLOURS, DIRECTIONS, POSITIONS, SHAPES, SIZES, Scene


@pytest.mark.parametrize("video", [False, True])
def test_scorer_reads_every_rendered_scene(video):
    wrong = []
    for scene in all_scenes(video):
        pixels = render(scene, seed=7)
        reading = read_video(pixels) if video else read_image(pixels)
        wrong += [(scene.caption, k) for k, ok in agreement(scene, reading).items() if not ok]
    assert wrong == []


def test_scorer_tolerates_noise_and_uint8():
    rng = np.random.default_rng(0)
    for scene in all_scenes(video=False)[::7]:
        noisy = np.clip(render(scene, seed=1) + rng.normal(0, 0.04, (64, 64, 3)), 0, 1)
        assert all(agreement(scene, read_image((noisy * 255).astype(np.uint8))).values()), scene.caption


def test_scorer_notices_the_wrong_scene():
    red_circle = Scene("circle", "red", "large", "dark", position="left")
    blue_square = Scene("square", "blue", "small", "dark", position="right")
    result = agreement(blue_square, read_image(render(red_circle)))
    assert not any(result[k] for k in ("colour", "shape", "size", "position"))
    assert result["background"]


def test_scorer_reads_motion_direction_and_static_video():
    scene = Scene("triangle", "green", "small", "light", direction="up")
    video = render(scene, seed=3)
    assert read_video(video).direction == "up"
    assert read_video(video[::-1]).direction == "down"
    assert read_video(np.repeat(video[:1], 9, axis=0)).direction is None


def test_empty_frame_is_not_found():
    blank = np.full((64, 64, 3), 0.1, dtype=np.float32)
    reading = read_image(blank)
    assert not reading.found
    assert not any(agreement(Scene("circle", "red", "small", "dark", position="left"), reading).values())


def test_render_shapes_and_larger_sizes():
    scene = Scene("circle", "yellow", "large", "dark", direction="right")
    video = render(scene, seed=0, size=128, num_frames=17)
    assert video.shape == (17, 128, 128, 3) and video.dtype == np.float32
    assert 0.0 <= video.min() and video.max() <= 1.0
    assert read_video(video).direction == "right"
    assert np.array_equal(render(scene, seed=5), render(scene, seed=5))


@pytest.mark.parametrize("video", [False, True])
def test_split_is_fixed_disjoint_and_covers_every_value(video):
    train, held = split(video)
    assert len(held) == 50 and len(train) + len(held) == len(all_scenes(video))
    assert not set(s.caption for s in train) & set(s.caption for s in held)
    assert split(video) == (train, held)
    places = DIRECTIONS if video else POSITIONS
    for attr, values in (("shape", SHAPES), ("colour", COLOURS), ("size", SIZES)):
        assert {getattr(s, attr) for s in train} == set(values)
    assert {s.direction if video else s.position for s in train} == set(places)


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
