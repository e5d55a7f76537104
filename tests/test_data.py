"""ImageFolder (paths, labels, bad layouts), decoding to RGB uint8, and BadImageError.

Every image here is a real file written with Pillow into ``tmp_path``; expected pixels come
from Pillow's own conversions or from numpy written out by hand.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

import augment
import augment.sources.data
from augment.ops.images import BadImageError
from augment.sources.data import ImageFolder, decode_image


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _write(path: Path, array: np.ndarray | None = None, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_noise(16, 16) if array is None else array).save(path, format=fmt)
    return path


def _csv(path: Path, rows: dict[str, str]) -> Path:
    path.write_text("image_name,tags\n" + "".join(f"{k},{v}\n" for k, v in rows.items()))
    return path


def _decode_file(path: Path) -> np.ndarray:
    return decode_image(path.read_bytes(), str(path))


# --------------------------------------------------------------------------- ImageFolder


def test_paths_are_sorted_over_every_accepted_extension_any_case_nested(tmp_path):
    root = tmp_path / "images"
    formats = {
        "A.JPG": "JPEG",
        "b.jpeg": "JPEG",
        "j.Jpeg": "JPEG",
        "c.png": "PNG",
        "d/e.bmp": "BMP",
        "d/f/g.tif": "TIFF",
        "d/f/h.TIFF": "TIFF",
        "i.webp": "WEBP",
        "d/k.PNG": "PNG",
        "fake.jpg/l.png": "PNG",
    }  # a directory named like an image
    for i, (name, fmt) in enumerate(formats.items()):
        _write(root / name, _noise(8, 12, i), fmt)
    (root / "notes.txt").write_text("not an image")
    _write(root / "anim.gif", fmt="GIF")  # GIF is not an accepted extension
    (root / "noext").write_bytes((root / "c.png").read_bytes())
    stems = {Path(n).stem for n in formats}
    labels = _csv(tmp_path / "labels.csv", {s: "x" for s in stems})

    ds = ImageFolder(root, labels)

    assert ds.paths == sorted(root / n for n in formats)
    assert len(ds) == len(formats)
    for i in range(len(ds)):
        img, _ = ds[i]
        assert img.dtype == np.uint8 and img.shape == (8, 12, 3), ds.source(i)


def test_csv_labels_are_float32_multi_hot_over_sorted_tags(tmp_path):
    root = tmp_path / "images"
    for name in ["t0", "t1", "t2", "t3"]:
        _write(root / f"{name}.jpg")
    _write(root / "sub" / "t4.png")  # nested images are labelled by name too
    labels = _csv(
        tmp_path / "labels.csv",
        {
            "t0": "water road",
            "t1": "clear",
            "t2": "",
            "t3": "road clear primary",
            "t4": "primary",
            "unused_row": "haze",
        },
    )

    ds = ImageFolder(root, labels)

    assert ds.classes == ["clear", "primary", "road", "water"]
    assert [p.stem for p in ds.paths] == ["t4", "t0", "t1", "t2", "t3"]  # "sub/" < "t0.jpg"
    assert ds.labels.dtype == np.float32
    np.testing.assert_array_equal(
        ds.labels,
        np.array(
            [
                [0, 1, 0, 0],  # t4: primary
                [0, 0, 1, 1],  # t0: water road
                [1, 0, 0, 0],  # t1: clear
                [0, 0, 0, 0],  # t2: no tags
                [1, 1, 1, 0],  # t3: road clear primary
            ],
            dtype=np.float32,
        ),
    )
    np.testing.assert_array_equal(ds[1][1], ds.labels[1])
    assert ds.label(4).dtype == np.float32


def test_folder_labels_are_int64_class_indices_over_sorted_folder_names(tmp_path):
    root = tmp_path / "images"
    for rel in ["dog/3.png", "cat/1.png", "cat/2.jpg", "ant/4.png"]:
        _write(root / rel)

    ds = ImageFolder(root)

    assert ds.classes == ["ant", "cat", "dog"]
    assert [p.relative_to(root).as_posix() for p in ds.paths] == [
        "ant/4.png",
        "cat/1.png",
        "cat/2.jpg",
        "dog/3.png",
    ]
    assert ds.labels.dtype == np.int64
    np.testing.assert_array_equal(ds.labels, [0, 1, 1, 2])
    assert int(ds[3][1]) == 2


def test_csv_missing_a_row_names_the_image(tmp_path):
    root = tmp_path / "images"
    _write(root / "a.jpg")
    orphan = _write(root / "nested" / "orphan.png")
    labels = _csv(tmp_path / "labels.csv", {"a": "clear"})
    with pytest.raises(ValueError, match="orphan") as info:
        ImageFolder(root, labels)
    assert str(orphan) in str(info.value)


def test_csv_without_the_columns_is_a_value_error(tmp_path):
    root = tmp_path / "images"
    _write(root / "a.jpg")
    labels = tmp_path / "labels.csv"
    labels.write_text("name,label\na,clear\n")
    with pytest.raises(ValueError, match="image_name"):
        ImageFolder(root, labels)


def test_missing_csv_file_is_a_value_error(tmp_path):
    root = tmp_path / "images"
    _write(root / "a.jpg")
    with pytest.raises(ValueError, match="nope.csv"):
        ImageFolder(root, tmp_path / "nope.csv")


def test_images_directly_in_root_without_csv_is_a_value_error(tmp_path):
    _write(tmp_path / "cat" / "1.png")
    _write(tmp_path / "loose.png")
    with pytest.raises(ValueError, match="loose.png"):
        ImageFolder(tmp_path)


@pytest.mark.parametrize("content", ["nothing", "no images"])
def test_folder_without_images_is_a_value_error(tmp_path, content):
    if content == "no images":
        (tmp_path / "readme.txt").write_text("hello")
        (tmp_path / "sub").mkdir()
        (tmp_path / "sub" / "pic.gif").write_bytes(b"GIF89a")
    with pytest.raises(ValueError, match="no image files"):
        ImageFolder(tmp_path)


@pytest.mark.parametrize("kind", ["file", "missing"])
def test_root_that_is_not_a_directory_is_a_value_error(tmp_path, kind):
    root = tmp_path / "x.jpg"
    if kind == "file":
        _write(root)
    with pytest.raises(ValueError, match="not a directory"):
        ImageFolder(root)


# --------------------------------------------------------------------------- decoding


def _check_rgb(img: np.ndarray, h: int, w: int) -> None:
    assert isinstance(img, np.ndarray)
    assert img.dtype == np.uint8
    assert img.shape == (h, w, 3)


def test_decode_rgb_jpeg_and_png_is_pillows_pixels(tmp_path):
    pixels = _noise(10, 14, 3)
    png = _write(tmp_path / "a.png", pixels)
    jpg = _write(tmp_path / "a.jpg", pixels)
    _check_rgb(_decode_file(png), 10, 14)
    np.testing.assert_array_equal(_decode_file(png), pixels)  # lossless
    np.testing.assert_array_equal(_decode_file(jpg), np.asarray(Image.open(jpg).convert("RGB")))


def test_decode_grayscale_L_repeats_the_grey(tmp_path):
    grey = np.arange(0, 240, 2, dtype=np.uint8).reshape(8, 15)
    img = _decode_file(_write(tmp_path / "g.png", grey))
    _check_rgb(img, 8, 15)
    for c in range(3):
        np.testing.assert_array_equal(img[:, :, c], grey)


def test_decode_palette_P(tmp_path):
    im = Image.fromarray(_noise(9, 11, 4)).quantize(16)
    assert im.mode == "P"
    path = tmp_path / "p.png"
    im.save(path)
    img = _decode_file(path)
    _check_rgb(img, 9, 11)
    np.testing.assert_array_equal(img, np.asarray(im.convert("RGB")))
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 1


def test_decode_rgba_drops_alpha(tmp_path):
    rgba = np.concatenate([_noise(7, 5, 5), np.full((7, 5, 1), 7, np.uint8)], axis=2)
    rgba[0, 0, 3] = 0
    img = _decode_file(_write(tmp_path / "a.png", rgba))
    _check_rgb(img, 7, 5)
    np.testing.assert_array_equal(img, rgba[:, :, :3])


def test_decode_LA_repeats_the_grey_and_drops_alpha(tmp_path):
    la = Image.fromarray(
        np.stack(
            [np.arange(30, dtype=np.uint8).reshape(5, 6) * 8, np.full((5, 6), 100, np.uint8)],
            axis=2,
        ),
        mode="LA",
    )
    path = tmp_path / "la.png"
    la.save(path)
    assert Image.open(path).mode == "LA"
    img = _decode_file(path)
    _check_rgb(img, 5, 6)
    for c in range(3):
        np.testing.assert_array_equal(img[:, :, c], np.arange(30).reshape(5, 6) * 8)


def test_decode_16_bit_grayscale_png_scales_to_8_bit(tmp_path):
    values = np.array([[0, 65535, 32768, 257], [65280, 255, 1, 40000]], dtype=np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    img = _decode_file(path)
    _check_rgb(img, 2, 4)
    assert img[0, 0].tolist() == [0, 0, 0]
    assert img[0, 1].tolist() == [255, 255, 255]
    expected = np.round(values.astype(np.float64) * 255 / 65535).astype(np.uint8)
    for c in range(3):
        np.testing.assert_array_equal(img[:, :, c], expected)


def test_decode_cmyk_jpeg(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (12, 6), (10, 200, 30, 40)).save(path)
    assert Image.open(path).mode == "CMYK"
    img = _decode_file(path)
    _check_rgb(img, 6, 12)
    np.testing.assert_array_equal(img, np.asarray(Image.open(path).convert("RGB")))


def test_decode_applies_exif_orientation(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to display
    Image.fromarray(_noise(24, 40, 6)).save(path, exif=exif, quality=95)
    stored = Image.open(path)
    assert stored.size == (40, 24) and stored.getexif()[0x0112] == 6

    img = _decode_file(path)

    _check_rgb(img, 40, 24)  # width and height swapped
    np.testing.assert_array_equal(img, np.asarray(ImageOps.exif_transpose(Image.open(path))))
    raw = np.asarray(Image.open(path).convert("RGB"))
    np.testing.assert_array_equal(img, np.rot90(raw, k=-1))  # clockwise


# --------------------------------------------------------------------------- bad images


def _bad_folder(tmp_path: Path, name: str, content: bytes) -> tuple[ImageFolder, Path]:
    root = tmp_path / "images"
    _write(root / "good.png")
    bad = root / name
    bad.write_bytes(content)
    ds = ImageFolder(root, _csv(tmp_path / "labels.csv", {"good": "a", Path(name).stem: "a"}))
    return ds, bad


def _load(ds: ImageFolder, path: Path):
    return ds[ds.paths.index(path)]


def _truncated_jpeg() -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(_noise(64, 64, 7)).save(buf, format="JPEG", quality=95)
    data = buf.getvalue()
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    "name, content, cause",
    [
        ("zero.jpg", b"", "empty"),
        ("text.jpg", b"hello, this is not a picture\n" * 20, "not an image"),
        ("cut.jpg", _truncated_jpeg(), "truncated"),
    ],
)
def test_bad_file_is_bad_image_error_naming_file_and_cause(tmp_path, name, content, cause):
    ds, bad = _bad_folder(tmp_path, name, content)
    with pytest.raises(BadImageError) as info:
        _load(ds, bad)
    exc = info.value
    assert isinstance(exc, ValueError)
    assert exc.source == str(bad)
    assert str(bad) in str(exc)
    assert cause in exc.cause and exc.cause in str(exc)
    assert _load(ds, ds.paths[0] if ds.paths[0] != bad else ds.paths[1])[0].shape == (16, 16, 3)


def test_missing_file_is_bad_image_error(tmp_path):
    ds, bad = _bad_folder(tmp_path, "gone.png", b"")
    _write(bad)  # a real image ...
    index = ds.paths.index(bad)
    assert ds[index][0].shape == (16, 16, 3)
    bad.unlink()  # ... deleted after the dataset listed it
    with pytest.raises(BadImageError) as info:
        ds.read(index)
    assert info.value.source == str(bad)
    assert str(bad) in str(info.value)
    assert info.value.cause  # says why (e.g. "No such file or directory")
    with pytest.raises(BadImageError, match="gone.png"):
        augment.sources.data.read_file(bad)


def test_over_max_pixels_is_bad_image_error(tmp_path, monkeypatch):
    path = _write(tmp_path / "big.png", _noise(64, 64))
    monkeypatch.setattr(augment.sources.data, "MAX_PIXELS", 64 * 64 - 1)
    with pytest.raises(BadImageError) as info:
        _decode_file(path)
    assert info.value.source == str(path)
    assert "64x64" in info.value.cause and "4095" in info.value.cause
    monkeypatch.setattr(augment.sources.data, "MAX_PIXELS", 64 * 64)  # at the limit: fine
    assert _decode_file(path).shape == (64, 64, 3)


@pytest.mark.parametrize("pillow_limit", [3000, 1000])  # warning zone (< 2x) and error zone
@pytest.mark.parametrize("name", ["bomb.png", "bomb.jpg"])  # a JPEG skips Pillow's header
def test_pillow_decompression_bomb_is_bad_image_error(tmp_path, monkeypatch, pillow_limit, name):
    path = _write(tmp_path / name, _noise(64, 64))  # 4096 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pillow_limit)
    with pytest.raises(BadImageError) as info:
        _decode_file(path)
    assert info.value.source == str(path)
    assert "bomb" in info.value.cause


def test_bad_image_error_survives_pickling(tmp_path):
    ds, bad = _bad_folder(tmp_path, "zero.png", b"")
    with pytest.raises(BadImageError) as info:
        _load(ds, bad)
    copy = pickle.loads(pickle.dumps(info.value))
    assert type(copy) is BadImageError
    assert (copy.source, copy.cause) == (info.value.source, info.value.cause)
    assert str(copy) == str(info.value)
    assert isinstance(copy, ValueError)


@pytest.mark.parametrize("fast", ["simplejpeg", "opencv", "pillow only"])
def test_fast_jpeg_decoders_give_pillows_pixels(monkeypatch, fast):
    import augment.sources.data as data

    if fast != "simplejpeg":
        monkeypatch.setattr(data, "_simplejpeg", None)
    if fast == "pillow only":
        monkeypatch.setattr(data, "_cv2", None)
    if fast == "simplejpeg" and data._simplejpeg is None:
        pytest.skip("simplejpeg is not installed (pip install 'augment[fast]')")
    sample = sorted((Path(__file__).parent.parent / "data" / "sample").glob("*.jpg"))[:12]
    for path in sample:
        expected = np.asarray(Image.open(path).convert("RGB"))
        got = data.decode_image(path.read_bytes(), str(path))
        assert got.dtype == np.uint8 and np.array_equal(got, expected), path
    truncated = sample[0].read_bytes()[:4000]
    with pytest.raises(augment.BadImageError, match="truncated"):
        data.decode_image(truncated, "cut.jpg")
