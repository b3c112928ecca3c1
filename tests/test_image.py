"""The conditioning image: the embedded test card, and every kind of user file, good or bad."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from svdbench.media.image import InputImageError, conditioning_image, load_image, test_card

from .conftest import returns_quickly


def test_embedded_test_card_is_deterministic_and_structured():
    a, b = np.asarray(test_card()), np.asarray(test_card())
    assert a.shape == (576, 1024, 3) and np.array_equal(a, b)
    gray = a.mean(axis=2)
    edges = np.abs(np.diff(gray, axis=1)) > 40
    assert edges.mean() > 0.005  # hard edges to move and warp (about 1 percent of pixels)
    assert len(np.unique(a.reshape(-1, 3), axis=0)) > 1000  # gradients, not a few flat colours


def test_image_is_resized_to_the_run_size(tmp_path):
    Image.fromarray(np.full((300, 500, 3), 128, np.uint8)).save(tmp_path / "photo.jpg")
    assert conditioning_image(str(tmp_path / "photo.jpg"), 256, 128).size == (256, 128)
    assert conditioning_image(None, 128, 64).size == (128, 64)


@pytest.mark.parametrize(
    "mode, array",
    [
        ("L", np.full((64, 64), 200, np.uint8)),
        ("RGBA", np.dstack([np.full((64, 64, 3), 10, np.uint8), np.zeros((64, 64), np.uint8)])),
        ("I;16", np.full((64, 64), 65535, np.uint16)),
        ("P", None),
    ],
    ids=["grayscale", "rgba", "16-bit", "palette"],
)
def test_other_image_modes_are_converted_not_rejected(tmp_path, mode, array):
    path = tmp_path / "image.png"
    if mode == "P":
        Image.new("RGB", (64, 64), (255, 0, 0)).convert("P").save(path)
    else:
        Image.fromarray(array).save(path)  # the array's dtype and shape give the mode
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (64, 64)
    pixel = image.getpixel((5, 5))
    expected = {"L": (200, 200, 200), "RGBA": (255, 255, 255), "I;16": (255, 255, 255), "P": (255, 0, 0)}[mode]
    assert pixel == expected  # transparent RGBA composites on white; 16-bit full scale stays full scale


def test_huge_image_is_resized_not_an_oom(tmp_path):
    path = tmp_path / "huge.png"
    Image.new("RGB", (9000, 9000), (10, 200, 30)).save(path)  # 81 megapixels, flat so it compresses
    image = conditioning_image(str(path), 128, 128)
    assert image.size == (128, 128) and image.getpixel((3, 3)) == (10, 200, 30)


@pytest.mark.parametrize("case", ["missing", "directory", "not-an-image", "truncated"])
def test_bad_input_files_give_a_clear_error(tmp_path, case):
    path = tmp_path / "input.png"
    if case == "directory":
        path.mkdir()
    elif case == "not-an-image":
        path.write_text("hello, I am a text file\n")
    elif case == "truncated":
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(path)
        path.write_bytes(path.read_bytes()[:4000])
    with pytest.raises(InputImageError) as info:
        load_image(path)
    message = str(info.value)
    assert f"input.path={path}" in message
    expected = {
        "missing": "does not exist",
        "directory": "is a directory",
        "not-an-image": "could not be read as an image",
        "truncated": "truncated",
    }[case]
    assert expected in message


def load_within(path: Path, seconds: float = 10.0):
    """load_image(path) as (exception or image, seconds taken); fails the test if it blocks on a FIFO."""

    def call():
        try:
            return load_image(path)
        except Exception as exc:  # the InputImageError under test, or anything else to report
            return exc

    start = time.perf_counter()
    return returns_quickly(call, path, seconds), time.perf_counter() - start


@pytest.mark.parametrize("link", [False, True], ids=["fifo", "symlink-to-fifo"])
def test_named_pipe_is_refused_at_once(tmp_path, link):
    fifo = tmp_path / "input.png"
    os.mkfifo(fifo)
    path = fifo
    if link:
        path = tmp_path / "link.png"
        path.symlink_to(fifo)
    error, seconds = load_within(path)
    assert isinstance(error, InputImageError) and seconds < 5
    message = str(error)
    assert f"input.path={path} is " in message and "named pipe (FIFO)" in message
    assert "regular image file" in message and "Save the image to a file" in message  # what to do
    assert ("symbolic link to" in message) == link
    assert "\n" not in message  # one paragraph


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="needs /dev/null")
def test_device_is_refused():
    with pytest.raises(InputImageError, match="is a character device"):
        load_image("/dev/null")


def test_dangling_symlink_says_where_it_points(tmp_path):
    link = tmp_path / "input.png"
    link.symlink_to(tmp_path / "gone.png")
    with pytest.raises(InputImageError, match="does not exist .a symbolic link to .*gone.png"):
        load_image(link)


RED, BLUE = (230, 20, 20), (20, 20, 230)


@pytest.mark.parametrize("orientation, red_corner", [(6, "top right"), (8, "bottom left"), (1, "top left")])
def test_exif_orientation_is_applied_before_resizing(tmp_path, orientation, red_corner):
    """A wide picture stored with a red block at its stored top-left corner and an EXIF Orientation tag: 6 means
    "rotate 90 degrees clockwise to display", 8 counter-clockwise. Photo apps show it tall; so must svdbench."""
    stored = Image.new("RGB", (96, 48), BLUE)
    stored.paste(RED, (0, 0, 16, 16))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "phone.jpg"
    stored.save(path, quality=95, exif=exif)

    image = load_image(path)
    assert image.size == ((96, 48) if orientation == 1 else (48, 96))
    corners = {
        "top left": (2, 2),
        "top right": (image.width - 3, 2),
        "bottom left": (2, image.height - 3),
        "bottom right": (image.width - 3, image.height - 3),
    }

    def is_red(pixel):
        return pixel[0] > 180 and pixel[1] < 70 and pixel[2] < 70

    for name, xy in corners.items():
        assert is_red(image.getpixel(xy)) == (name == red_corner), name
    # conditioning_image resizes the upright picture: at twice the size the red block is still in that corner.
    big = conditioning_image(str(path), 2 * image.width, 2 * image.height)
    x, y = corners[red_corner]
    assert is_red(big.getpixel((2 * x, 2 * y)))
