"""A batch of samples with targets, made in the worker (``collate``) and handed to the loop
(``TargetBatch.assemble``): ``mask`` stacked like the images; the kinds whose count varies
per sample (``masks``, ``boxes``, ``keypoints``) and their per-box or per-point fields a
list of one array per sample, as torchvision's detection models take them, or padded with
counts (``pad_targets``); any other key batched by ``default_collate``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from augment.ops.sample_targets import TargetOptions, as_tuple


def check_pad(pad_targets) -> bool | int:
    """``pad_targets=``: False (lists), True (pad to the batch's largest count) or a count."""
    if isinstance(pad_targets, bool):
        return pad_targets
    if isinstance(pad_targets, (int, np.integer)) and pad_targets >= 0:
        return int(pad_targets)
    raise ValueError(
        "pad_targets must be False (boxes and keypoints as a list of tensors per batch), True "
        f"(padded to the batch's largest count) or a number of rows >= 0; got {pad_targets!r}"
    )


def collate(
    samples: list[dict], options: TargetOptions, pad: bool | int = False, masks=None
) -> dict:
    """Per-sample results made into batch fields (numpy): ``mask`` stacked (or ``masks``,
    where given: the samples' masks already in one array, as ``make_batch`` writes them),
    the listed kinds and their fields (``TargetOptions.listed``) a list of arrays, or with
    ``pad`` padded to the largest count (``True``) or to ``pad`` rows, with ``num_<key>``
    counts; any other key a list of the samples' values (the loader batches it with
    ``default_collate``)."""
    out: dict = {}
    for i, s in enumerate(samples):
        if s.keys() != samples[0].keys():
            raise ValueError(
                f"the samples of a batch must hold the same keys, but sample {i} has "
                f"{sorted(s)} and the first {sorted(samples[0])}"
            )
    for key in samples[0]:
        values = [s[key] for s in samples]
        if key == "mask":
            out[key] = np.stack(values) if masks is None else masks
        elif options.listed(key):
            arrays = Arrays(np.asarray(v) for v in values)
            if pad is False:
                out[key] = arrays
            else:
                out[key], out[f"num_{key}"] = _pad(arrays, pad, key)
        else:
            out[key] = values
    return out


@dataclass
class TargetBatch:
    """A batch's targets, made in the worker (``collate``): the fields, and the names of a
    tuple sample's items (None for dict samples)."""

    fields: dict
    names: tuple[str, ...] | None = None

    def assemble(self, images, convert, default_collate, image_key: str = "image"):
        """The batch for the loop: a dict with the images under ``image_key``, or the
        sample's tuple, its arrays made tensors by ``convert`` and other values batched by
        ``default_collate``."""
        out = {image_key: images}
        for key, value in self.fields.items():
            if isinstance(value, np.ndarray):
                tensor = convert(value)
                # N x H x W x C masks as N x C x H x W (a view), as the images
                if key == "mask" and value.ndim == 4:
                    tensor = tensor.permute(0, 3, 1, 2)
                out[key] = tensor
            elif isinstance(value, Arrays):
                out[key] = [convert(v) for v in value]
            else:
                out[key] = default_collate(value)
        return out if self.names is None else as_tuple(out, self.names)


class Arrays(list):
    """A batch field whose length varies per sample: one array per sample."""


def _pad(arrays: list[np.ndarray], pad: bool | int, key: str):
    counts = np.array([len(a) for a in arrays], dtype=np.int64)
    rows = int(counts.max(initial=0)) if pad is True else int(pad)
    if counts.max(initial=0) > rows:
        i = int(np.argmax(counts))
        raise ValueError(
            f"sample {i} of the batch has {counts[i]} {key}, more than pad_targets={pad}: "
            "raise pad_targets or use pad_targets=True (the batch's largest count)"
        )
    first = next((a for a in arrays if a.size), arrays[0])
    dtype = first.dtype if first.size else np.float32
    value = 0 if dtype.kind in "ub" else -1
    out = np.full((len(arrays), rows, *first.shape[1:]), value, dtype=dtype)
    for i, a in enumerate(arrays):
        if len(a):
            out[i, : len(a)] = a
    return out, counts
