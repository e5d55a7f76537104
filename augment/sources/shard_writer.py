"""write_shards: any dataset into tar shards in WebDataset's layout, with an index.

A shard is a plain tar of members ``<key>.<ext>`` (the image: its file's own bytes for a
staged dataset, an encoded JPEG or PNG for a map-style one) and ``<key>.cls`` (an integer
label) or ``<key>.json`` (any other target), ``key`` being the sample's index zero-padded:
what the ``webdataset`` package reads as it is. ``index.json`` beside the shards records, for
every sample, its shard, the offset and size of its image's bytes and their CRC32, and its
label, so that ``augment.Shards`` reads one sample (or a batch's, coalesced) with a range
request and never lists or scans a tar. Shards are written in sample order and close when
the next sample would take them past ``shard_bytes``; the output of one dataset is the same
bytes every time (no timestamps, no owners).
"""

from __future__ import annotations

import io
import json
import tarfile
import zlib
from pathlib import Path

import numpy as np

from augment.sources.samples import Staged, as_image, source_for

INDEX = "index.json"
FORMAT = "augment.sources.shards"
VERSION = 1
TAR_BLOCK = 512
_MAGIC = ((b"\xff\xd8\xff", "jpg"), (b"\x89PNG", "png"), (b"RIFF", "webp"), (b"BM", "bmp"))
_SUFFIXES = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp", ".bmp": "bmp"}
_SUFFIXES.update({".tif": "tiff", ".tiff": "tiff"})


def write_shards(
    dataset,
    folder: str | Path,
    shard_bytes: int = 256 << 20,
    image_format: str = "jpg",
    quality: int = 95,
    overwrite: bool = False,
) -> Path:
    """Write every sample of ``dataset`` (staged, as ``ImageFolder``, or map-style) into
    ``folder/shard-NNNNNN.tar`` files of about ``shard_bytes`` each, and ``folder/index.json``
    last. Returns ``folder``.

    A staged dataset's images keep their bytes (so ``Shards`` decodes the same pixels as the
    dataset); a map-style dataset's images (uint8 arrays, PIL images or tensors) are encoded
    as ``image_format`` "jpg" (at ``quality``) or "png" (lossless). ``overwrite`` replaces
    shards already in ``folder``."""
    folder = Path(folder)
    if isinstance(shard_bytes, bool) or not isinstance(shard_bytes, int) or shard_bytes < 1:
        raise ValueError(f"shard_bytes must be an integer >= 1, got {shard_bytes!r}")
    if image_format not in ("jpg", "png"):
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    source = source_for(dataset)
    if len(dataset) == 0:
        raise ValueError("the dataset is empty: nothing to write")
    folder.mkdir(parents=True, exist_ok=True)
    old = sorted(folder.glob("shard-*.tar")) + sorted(folder.glob(INDEX))
    if old and not overwrite:
        raise ValueError(
            f"{str(folder)!r} already holds shards ({old[0].name}...): pass overwrite=True "
            "to replace them, or choose an empty folder"
        )
    for path in old:
        path.unlink()
    staged = isinstance(source, Staged)
    width = max(8, len(str(len(dataset) - 1)))
    writer = _ShardWriter(folder, shard_bytes)
    members, labels, spec = [], [], None
    try:
        for index in range(len(dataset)):
            if staged:
                data, ext = _staged_image(dataset, index)
                label = dataset.label(index)
            else:
                image, label = _map_item(source, index)
                data, ext = _encode(image, image_format, quality, source.name(index))
            if spec is None:
                spec = label_spec(label)
            key = f"{index:0{width}d}"
            kind = spec["t"]
            extra = []
            if kind == "int":
                extra = [(f"{key}.cls", str(int(label)).encode())]
            elif kind != "none":
                extra = [(f"{key}.json", json.dumps(to_json(label)).encode())]
            shard, offset = writer.add(f"{key}.{ext}", data, extra)
            members.append([shard, offset, len(data), ext, zlib.crc32(data)])
            labels.append(None if kind == "none" else to_json(label))
    finally:
        writer.close()
    index = {
        "format": FORMAT,
        "version": VERSION,
        "samples": len(members),
        "key_width": width,
        "shards": writer.shards,
        "members": members,
        "label": spec,
        "labels": labels if spec["t"] != "none" else None,
        "classes": list(getattr(dataset, "classes", []) or []),
    }
    tmp = folder / (INDEX + ".tmp")
    tmp.write_text(json.dumps(index, separators=(",", ":")))
    tmp.replace(folder / INDEX)
    return folder


class _ShardWriter:
    """Tar files of about ``limit`` bytes, members added with fixed metadata."""

    def __init__(self, folder: Path, limit: int):
        self.folder, self.limit = folder, limit
        self.shards: list[dict] = []  # {"name", "bytes", "samples"}
        self._tar: tarfile.TarFile | None = None
        self._size = 0

    def add(self, name: str, data: bytes, extra: list[tuple[str, bytes]]) -> tuple[int, int]:
        """Add a sample's members; returns (shard number, offset of ``data`` in it)."""
        size = sum(
            TAR_BLOCK + -(-len(d) // TAR_BLOCK) * TAR_BLOCK for _, d in [(name, data)] + extra
        )
        if self._tar is None or (self._size and self._size + size > self.limit):
            self._open()
        offset = self._member(name, data)
        for other, payload in extra:
            self._member(other, payload)
        self._size += size
        self.shards[-1]["samples"] += 1
        return len(self.shards) - 1, offset

    def _open(self) -> None:
        self.close()
        name = f"shard-{len(self.shards):06d}.tar"
        self._tar = tarfile.open(self.folder / name, "w", format=tarfile.USTAR_FORMAT)
        self.shards.append({"name": name, "bytes": 0, "samples": 0})
        self._size = 0

    def _member(self, name: str, data: bytes) -> int:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o444
        header = info.tobuf(self._tar.format, self._tar.encoding, self._tar.errors)
        offset = self._tar.offset + len(header)
        self._tar.addfile(info, io.BytesIO(data))
        return offset

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self.shards[-1]["bytes"] = (self.folder / self.shards[-1]["name"]).stat().st_size
            self._tar = None


def _tar_bytes(n: int) -> int:
    """A member of ``n`` bytes in a tar: its header and its data padded to blocks."""
    return TAR_BLOCK + -(-n // TAR_BLOCK) * TAR_BLOCK


def _staged_image(dataset, index: int) -> tuple[bytes, str]:
    data = dataset.read(index)
    suffix = Path(str(dataset.source(index)).split("?")[0]).suffix.lower()
    ext = _SUFFIXES.get(suffix) or next((e for m, e in _MAGIC if data.startswith(m)), None)
    if ext is None:
        raise ValueError(
            f"{dataset.source(index)}: cannot tell the image format (no known suffix, and "
            f"the bytes are none of {', '.join(e for _, e in _MAGIC)})"
        )
    return data, ext


def _map_item(source, index: int):
    """(image, label) of a map-style sample: the label is the one target, a tuple of
    several, a dict of the non-image keys, or None."""
    item = source.dataset[index]
    if isinstance(item, dict):
        if "image" not in item:
            raise ValueError(f"{source.name(index)} is a dict without an 'image' key")
        rest = {k: v for k, v in item.items() if k != "image"}
        return item["image"], rest
    if isinstance(item, (tuple, list)):
        rest = tuple(item[1:])
        return item[0], (rest[0] if len(rest) == 1 else (rest or None))
    return item, None


def _encode(image, image_format: str, quality: int, name: str) -> tuple[bytes, str]:
    from PIL import Image

    pixels = as_image(image, lambda: name)
    if pixels.dtype != np.uint8:
        raise ValueError(
            f"{name}: write_shards encodes uint8 images only (JPEG, PNG); got {pixels.dtype}"
        )
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    buffer = io.BytesIO()
    if image_format == "jpg":
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    else:
        Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue(), image_format


def _is_int(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, np.integer)):
        return True
    return getattr(value, "ndim", None) == 0 and np.issubdtype(np.asarray(value).dtype, np.integer)


def label_spec(label) -> dict:
    """How a label is stored and read back: ``{"t": "none" | "int" | "array" (with "dtype")
    | "dict" (with "items") | "tuple" (with "items") | "json"}``, from the first sample."""
    if label is None:
        return {"t": "none"}
    if _is_int(label):
        return {"t": "int"}
    if hasattr(label, "detach"):  # a torch tensor
        label = label.detach().cpu().numpy()
    if isinstance(label, np.ndarray | np.generic):
        return {"t": "array", "dtype": np.asarray(label).dtype.str}
    if isinstance(label, dict):
        return {"t": "dict", "items": {str(k): label_spec(v) for k, v in label.items()}}
    if isinstance(label, tuple):
        return {"t": "tuple", "items": [label_spec(v) for v in label]}
    return {"t": "json"}


def to_json(value):
    """``value`` as JSON: arrays and tensors as nested lists."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [to_json(v) for v in value]
    return value


def from_json(value, spec: dict):
    """A label as written, from its JSON and ``label_spec``."""
    kind = spec["t"]
    if kind == "int":
        return np.int64(value)
    if kind == "array":
        return np.asarray(value, dtype=np.dtype(spec["dtype"]))
    if kind == "dict":
        return {k: from_json(value[k], s) for k, s in spec["items"].items()}
    if kind == "tuple":
        return tuple(from_json(v, s) for v, s in zip(value, spec["items"]))
    return value
