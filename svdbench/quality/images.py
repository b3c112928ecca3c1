"""The conditioning images of the quality samples: a built-in set of real photographs, or the user's folder.

The built-in set is scikit-image's sample photographs that its wheel ships in `skimage/data/` (read as files:
nothing is downloaded, and skimage itself is never imported). scikit-image fetches its other data sets with
pooch at first use; none of those is here. Each image is prepared the way a run prepares `input.path`
(svdbench.media.image: EXIF orientation, RGB, bicubic resize to width x height).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from svdbench.media.image import InputImageError, conditioning_image
from svdbench.settings.config import QUALITY_SET_SIZE

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class SetImage:
    name: str  # the sample's image name in results.json and file names
    file: str  # under skimage/data/
    what: str  # what it shows, for the docs
    credit: str


# Order matters: quality.images=N takes the first N, so the first ones are the most varied.
IMAGE_SET = (
    SetImage("astronaut", "astronaut.png", "a person: portrait of astronaut Eileen Collins", "NASA, public domain"),
    SetImage("chelsea", "chelsea.png", "an animal: a cat's head", "Stefan van der Walt, CC0"),
    SetImage("rocket", "rocket.jpg", "a landscape: a launch pad under the sky", "SpaceX, public domain"),
    SetImage("text", "text.png", "text: grey letters on a shaded ground", "Wikipedia, public domain"),
    SetImage("brick", "brick.png", "texture: a brick wall", "CC0Textures, CC0"),
    SetImage("coffee", "coffee.png", "an object: a cup of coffee on a table", "Rachel Michetti, CC0"),
    SetImage("motorcycle", "motorcycle_left.png", "a street scene: a motorcycle", "Middlebury 2014 stereo benchmark"),
    SetImage("hubble", "hubble_deep_field.jpg", "the night sky: Hubble deep field", "NASA, public domain"),
)
assert len(IMAGE_SET) == QUALITY_SET_SIZE  # the setting's bound (quality.images) is this set's size


class QualityImagesError(InputImageError):
    """The images of quality.images cannot be read; the message says which and how to fix it."""


def set_directory() -> Path:
    """skimage/data/ of the installed scikit-image, found without importing it."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise QualityImagesError(
            "quality.images=N needs scikit-image, whose wheel holds the built-in photographs; it is not installed. "
            "Install svdbench's dependencies (pip install -e .), or give quality.images a folder of your own images."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def set_paths(count: int) -> list[tuple[str, Path]]:
    """(name, file) of the first `count` images of the built-in set; each file must be in the wheel."""
    directory = set_directory()
    chosen = [(image.name, directory / image.file) for image in IMAGE_SET[:count]]
    missing = [str(path) for _, path in chosen if not path.is_file()]
    if missing:
        raise QualityImagesError(
            f"The built-in quality images {', '.join(missing)} are missing from the installed scikit-image (its "
            "wheel ships them). Reinstall scikit-image (pip install --force-reinstall scikit-image), or give "
            "quality.images a folder of your own images."
        )
    return chosen


def folder_paths(folder: str | Path) -> list[tuple[str, Path]]:
    """(name, file) of every image of a folder, by name; the name is the file's stem."""
    folder = Path(folder).expanduser()
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise QualityImagesError(
            f"quality.images={folder} holds no images ({', '.join(IMAGE_SUFFIXES)}): put PNG or JPEG files there, "
            "or use quality.images=N for the first N of the built-in set."
        )
    stems = [p.stem for p in files]
    if len(set(stems)) != len(stems):
        twice = sorted({s for s in stems if stems.count(s) > 1})
        raise QualityImagesError(
            f"quality.images={folder} holds several images named {', '.join(twice)} (other extensions): samples are "
            "named by the image's name without extension, so rename or remove one of each."
        )
    return list(zip(stems, files))


def image_paths(spec: str) -> list[tuple[str, Path]]:
    """The images quality.images names: N (the first N of the set) or a folder."""
    spec = str(spec).strip()
    return set_paths(int(spec)) if spec.isdigit() else folder_paths(spec)


def load(path: Path, width: int, height: int) -> Image.Image:
    """One image prepared as the run prepares input.path."""
    try:
        return conditioning_image(str(path), width, height)
    except InputImageError as exc:
        raise QualityImagesError(str(exc).replace("input.path=", "quality.images: ")) from exc


def image_set(spec: str, width: int, height: int) -> list[tuple[str, Image.Image]]:
    """(name, prepared image) of quality.images; small enough to hold (a few RGB images)."""
    return [(name, load(path, width, height)) for name, path in image_paths(spec)]
