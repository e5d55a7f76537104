"""The keyed random streams: every sample's randomness from (seed, epoch, index) and each
epoch's order from (seed, epoch), whichever process draws them."""

from __future__ import annotations

import numpy as np

# Philox streams, keyed directly (no SeedSequence hashing, see ``KeyedRng``): the key is
# (seed, stream tag), the counter starts at (0, 0, epoch, index).
ORDER_STREAM, SAMPLE_STREAM = 0, 1
_WORD = 1 << 64


class KeyedRng:
    """A ``numpy.random.Generator`` on a Philox bit generator, re-keyed for each sample.

    Philox (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011) turns a
    256-bit counter into random bits under a 128-bit key; numpy's ``Philox`` takes both as
    they are. The stream of ``(seed, epoch, index)`` is key ``(seed, tag)`` and counter
    ``(0, 0, epoch, index)``; each draw of 4 words adds 1 to the counter, carrying upwards.
    Distinct ``(seed, tag)`` are distinct keys; under one key, distinct ``(epoch, index)``
    start 2**128 blocks apart, farther than any sample draws, so no two samples (and no
    sample and an epoch's order, whose tag differs) ever share a block of random bits. Each
    of seed, epoch and index is an integer in ``[0, 2**64)``, else a ``ValueError``.

    Why not ``np.random.default_rng([seed, epoch, 1, index])`` as before: it hashes a
    ``SeedSequence`` for every sample (about 13 us); building a ``Philox`` is no cheaper (it
    draws OS entropy for a ``SeedSequence`` it then ignores), but setting the state of one
    already built takes about 1 us. ``at(epoch, index)`` does that and returns the same
    generator each time: what a transform got for one sample is re-keyed for the next, so a
    transform must not keep the generator beyond its call (none of augment's does).
    """

    __slots__ = ("seed", "tag", "generator", "_bits", "_state", "_counter")

    def __init__(self, seed: int, tag: int = SAMPLE_STREAM):
        self.seed = _check_word(seed, "seed")
        self.tag = _check_word(tag, "tag")
        self._bits = np.random.Philox(key=np.array([self.seed, self.tag], dtype=np.uint64))
        self.generator = np.random.Generator(self._bits)
        self._counter = [0, 0, 0, 0]
        self._state = {
            "bit_generator": "Philox",
            "state": {"counter": self._counter, "key": [self.seed, self.tag]},
            "buffer": [0, 0, 0, 0],
            "buffer_pos": 4,  # the buffer is empty: the first draw computes a block
            "has_uint32": 0,
            "uinteger": 0,
        }

    def at(self, epoch: int, index: int = 0) -> np.random.Generator:
        """The generator, set to the start of the stream of ``(epoch, index)``."""
        if not (
            type(epoch) is int and type(index) is int and 0 <= epoch < _WORD and 0 <= index < _WORD
        ):
            epoch, index = _check_word(epoch, "epoch"), _check_word(index, "index")
        counter = self._counter
        counter[2], counter[3] = epoch, index
        self._bits.state = self._state
        return self.generator


def _check_word(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer in [0, 2**64), got {value!r}")
    if not 0 <= value < _WORD:
        raise ValueError(
            f"{name} must be in [0, 2**64) (the random streams are keyed on 64-bit words), "
            f"got {value}"
        )
    return int(value)


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """A new generator for sample ``index`` of ``epoch`` (see ``KeyedRng``): the one
    ``make_batch`` hands the transform, which re-keys a single generator instead."""
    return KeyedRng(seed, SAMPLE_STREAM).at(epoch, index)


def order_rng(seed: int, epoch: int) -> np.random.Generator:
    """The generator of ``epoch``'s order (see ``KeyedRng``; a stream no sample shares)."""
    return KeyedRng(seed, ORDER_STREAM).at(epoch, 0)


def check_seed(seed, where: str = "seed") -> int:
    """A seed the streams can be keyed on: an integer in [0, 2**64), else a ``ValueError``
    naming ``where``."""
    return _check_word(seed, where)
