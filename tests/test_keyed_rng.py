"""The per-sample generator keyed on (seed, epoch, index) without a SeedSequence: the same
key gives the same stream, re-keying one generator gives what a fresh one gives, distinct
keys give distinct streams, out-of-range keys are refused, and make_batch hands each sample
its own stream whatever ran before it."""

from __future__ import annotations

import numpy as np
import pytest

from augment.loading.batch import BatchPlan, BatchTask, make_batch
from augment.loading.rng import ORDER_STREAM, SAMPLE_STREAM, KeyedRng, order_rng, sample_rng
from augment.sources.samples import source_for

BIG = 2**64 - 1


def draws(g: np.random.Generator) -> list:
    """A mix of draws touching the 64-bit and the buffered 32-bit paths."""
    return [
        g.random(3).tolist(),
        g.integers(0, 10, 5, dtype=np.uint8).tolist(),  # 32-bit draws: a half-used word
        g.integers(0, 2**40, 2).tolist(),
        g.normal(size=2).tolist(),
        g.permutation(6).tolist(),
    ]


def test_the_same_key_gives_the_same_stream():
    assert draws(sample_rng(5, 2, 9)) == draws(sample_rng(5, 2, 9))
    assert draws(order_rng(5, 2)) == draws(order_rng(5, 2))
    assert draws(sample_rng(BIG, BIG, BIG)) == draws(sample_rng(BIG, BIG, BIG))


def test_rekeying_one_generator_gives_a_fresh_generators_stream():
    """Whatever was drawn before (a buffered half word included), ``at`` starts over."""
    keyed = KeyedRng(11)
    for epoch, index in [(0, 0), (0, 1), (3, 0), (0, 1), (7, 123456789)]:
        g = keyed.at(epoch, index)
        g.integers(0, 3, dtype=np.uint8)  # leaves half a 64-bit word buffered
        g = keyed.at(epoch, index)
        assert g is keyed.generator
        assert draws(g) == draws(sample_rng(11, epoch, index))


def test_the_key_layout_is_the_documented_one():
    state = sample_rng(6, 4, 2).bit_generator.state
    assert state["bit_generator"] == "Philox"
    assert state["state"]["key"].tolist() == [6, SAMPLE_STREAM]
    assert state["state"]["counter"].tolist() == [0, 0, 4, 2]
    assert order_rng(6, 4).bit_generator.state["state"]["key"].tolist() == [6, ORDER_STREAM]
    # a Philox built by numpy from that key and counter draws the same numbers
    ref = np.random.Generator(np.random.Philox(key=[6, SAMPLE_STREAM], counter=[0, 0, 4, 2]))
    assert draws(ref) == draws(sample_rng(6, 4, 2))


def test_distinct_seed_epoch_index_give_distinct_streams():
    """Over a grid of keys, edges of the 64-bit range included, no two first blocks agree,
    and the order streams share none with the sample streams."""
    values = [0, 1, 2, 3, 2**32 - 1, 2**32, 2**63, BIG]
    seen: dict[tuple, tuple] = {}
    for seed in values[:5]:
        for epoch in values:
            for index in values:
                first = tuple(sample_rng(seed, epoch, index).bit_generator.random_raw(4).tolist())
                assert first not in seen, f"{(seed, epoch, index)} repeats {seen[first]}"
                seen[first] = (seed, epoch, index)
        for epoch in values:
            first = tuple(order_rng(seed, epoch).bit_generator.random_raw(4).tolist())
            assert first not in seen
            seen[first] = ("order", seed, epoch)
    # swapping epoch and index, or moving a unit between them, changes the stream
    assert draws(sample_rng(0, 1, 2)) != draws(sample_rng(0, 2, 1))
    assert draws(sample_rng(0, 0, 2**32)) != draws(sample_rng(0, 1, 0))


def test_neighbouring_samples_do_not_overlap_in_a_long_draw():
    """Sample i's stream does not run into sample i+1's: 10^5 words of one share none of the
    first words of the next (the counters start 2**128 blocks apart)."""
    long = set(sample_rng(1, 0, 5).bit_generator.random_raw(100_000).tolist())
    assert not long & set(sample_rng(1, 0, 6).bit_generator.random_raw(64).tolist())
    assert not long & set(sample_rng(1, 1, 5).bit_generator.random_raw(64).tolist())


@pytest.mark.parametrize(
    "args, name",
    [
        ((-1, 0, 0), "seed"),
        ((2**64, 0, 0), "seed"),
        ((0, -1, 0), "epoch"),
        ((0, 2**64, 0), "epoch"),
        ((0, 0, -3), "index"),
        ((0, 0, 2**70), "index"),
    ],
)
def test_out_of_range_keys_are_refused(args, name):
    with pytest.raises(ValueError, match=rf"{name} must be in \[0, 2\*\*64\)"):
        sample_rng(*args)


def test_keys_that_are_not_integers_are_refused():
    with pytest.raises(ValueError, match="seed must be an integer"):
        KeyedRng(1.5)
    with pytest.raises(ValueError, match="seed must be an integer"):
        KeyedRng(True)
    with pytest.raises(ValueError, match="epoch must be an integer"):
        KeyedRng(0).at(0.5, 1)
    assert draws(sample_rng(np.int64(3), np.uint32(1), np.int64(2))) == draws(sample_rng(3, 1, 2))


class Tiles:
    """A map-style dataset of 6x6 tiles, the same for every index."""

    def __len__(self):
        return 50

    def __getitem__(self, index):
        return np.full((6, 6, 3), index, np.uint8), index


def record(img, rng):
    """A user transform that writes its first draws into the pixels."""
    out = img.copy()
    out[0, 0, :] = rng.integers(0, 256, 3, dtype=np.uint8)
    out[1, :, 0] = rng.integers(0, 256, 6, dtype=np.uint8)
    return out


def test_make_batch_gives_each_sample_its_stream_whatever_came_before():
    """The batch's one generator, re-keyed per sample: sample 7 draws the same in any batch,
    at any position, and the same as a fresh ``sample_rng``."""
    task = BatchTask(source_for(Tiles()), record, seed=4)
    a = make_batch(task, BatchPlan(2, 0, (7, 3, 11))).images
    b = make_batch(task, BatchPlan(2, 5, (11, 0, 7, 3))).images
    assert np.array_equal(a[0], b[2]) and np.array_equal(a[1], b[3])
    assert np.array_equal(a[2], b[0])
    for row, index in zip(a, (7, 3, 11), strict=True):
        assert np.array_equal(
            row, record(np.full((6, 6, 3), index, np.uint8), sample_rng(4, 2, index))
        )
    other_epoch = make_batch(task, BatchPlan(3, 0, (7,))).images
    assert not np.array_equal(other_epoch[0], a[0])
