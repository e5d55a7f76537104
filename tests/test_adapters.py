"""augment.adapters.albumentations: real albumentations transforms driven by the sample's rng.

Same rng, same image; global seeds play no part; threads sharing one adapter agree with a
serial run; the adapter pickles; and a real Loader gives the same first epoch, bit for bit,
on the serial, thread, process and torch backends.
"""

from __future__ import annotations

import copy
import pickle
import random
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

A = pytest.importorskip("albumentations")

from support import SAMPLE  # noqa: E402

import augment  # noqa: E402
from augment.ops.adapters import _GeneratorRandom, albumentations  # noqa: E402


def pipeline(crop: int = 48):
    """Draws from both of albumentations' sources: random.Random and a numpy Generator."""
    return A.Compose(
        [
            A.HorizontalFlip(p=0.5),
            A.RandomRotate90(p=0.5),
            A.Rotate(limit=30, p=0.8),
            A.RandomCrop(crop, crop),
            A.RandomBrightnessContrast(p=0.5),
            # OneOf picks, and GaussNoise draws its noise, with the numpy Generator
            A.OneOf([A.GaussNoise(std_range=(0.05, 0.1)), A.Blur(blur_limit=3)], p=0.7),
        ]
    )


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(123).integers(0, 256, (64, 80, 3), dtype=np.uint8)


def test_same_rng_state_same_image_and_different_rngs_differ(image):
    adapter = albumentations(pipeline())
    first = [adapter(image, np.random.default_rng([9, i])) for i in range(24)]
    again = [adapter(image, np.random.default_rng([9, i])) for i in reversed(range(24))][::-1]
    for a, b in zip(first, again):
        assert a.dtype == np.uint8 and a.shape == (48, 48, 3)
        np.testing.assert_array_equal(a, b)
    assert len({a.tobytes() for a in first}) == len(first)  # rotation angle alone differs


def test_probability_draws_come_from_rng(image):
    """p=0.5 is decided by albumentations' random.Random: it too must follow the rng."""
    adapter = albumentations(A.HorizontalFlip(p=0.5))
    flipped = [
        np.array_equal(adapter(image, np.random.default_rng(i)), image[:, ::-1]) for i in range(40)
    ]
    assert flipped == [
        np.array_equal(adapter(image, np.random.default_rng(i)), image[:, ::-1]) for i in range(40)
    ]
    assert 5 < sum(flipped) < 35


def test_global_random_states_do_not_drive_it(image):
    adapter = albumentations(pipeline())
    outputs = []
    for global_seed in (0, 1, 2):
        random.seed(global_seed)
        np.random.seed(global_seed)
        outputs.append(adapter(image, np.random.default_rng(42)))
    for out in outputs[1:]:
        np.testing.assert_array_equal(out, outputs[0])


def test_the_rng_is_advanced_and_the_given_transform_left_alone(image):
    given = pipeline()
    nodes = [given, *given.transforms]
    before = [(n.random_generator, n.py_random, n.py_random.getstate()) for n in nodes]
    rng = np.random.default_rng(5)
    albumentations(given)(image, rng)
    assert rng.bit_generator.state != np.random.default_rng(5).bit_generator.state
    assert [(n.random_generator, n.py_random, n.py_random.getstate()) for n in nodes] == before


def test_threads_sharing_one_adapter_match_serial_calls(image):
    adapter = albumentations(pipeline())
    seeds = range(400)
    serial = [adapter(image, np.random.default_rng(s)) for s in seeds]
    fresh = albumentations(pipeline())
    start = threading.Barrier(8)

    def call(s):
        if s < 8:
            start.wait()  # all eight threads start together
        return fresh(image, np.random.default_rng(s))

    with ThreadPoolExecutor(8) as pool:
        threaded = list(pool.map(call, seeds))
    for s, (a, b) in enumerate(zip(serial, threaded)):
        np.testing.assert_array_equal(a, b, err_msg=f"seed {s}")


def test_pickles_without_its_thread_copies_and_prints_as_built(image):
    adapter = albumentations(A.HorizontalFlip(p=0.5))
    assert repr(adapter) == "albumentations(HorizontalFlip(p=0.5))"
    adapter = albumentations(pipeline())
    expected = adapter(image, np.random.default_rng(3))  # makes this thread's copy
    clone = pickle.loads(pickle.dumps(adapter))
    assert repr(clone) == repr(adapter) and repr(clone).startswith("albumentations(Compose([")
    np.testing.assert_array_equal(clone(image, np.random.default_rng(3)), expected)
    np.testing.assert_array_equal(copy.deepcopy(adapter)(image, np.random.default_rng(3)), expected)
    empty = pickle.loads(pickle.dumps(albumentations(A.Compose([]))))  # a Compose of len 0
    np.testing.assert_array_equal(empty(image, np.random.default_rng(3)), image)


def test_python_random_draws_are_the_rngs_and_do_not_leak_between_samples():
    py = _GeneratorRandom()
    py.use(np.random.default_rng(1))
    py.gauss()  # leaves a second value behind in a plain random.Random
    py.use(np.random.default_rng(2))
    leaked = [py.gauss(), py.uniform(-3, 3), py.randint(0, 10**30), py.choice("abcdef")]
    py.use(np.random.default_rng(2))
    assert [py.gauss(), py.uniform(-3, 3), py.randint(0, 10**30), py.choice("abcdef")] == leaked
    assert 0 <= leaked[2] <= 10**30 and leaked[2] > 2**64  # getrandbits beyond 64 bits
    with pytest.raises(TypeError, match="numpy Generator"):
        py.seed(0)


@pytest.mark.parametrize(
    "bad, hint",
    [
        (lambda img, rng: img, "function"),
        (augment.RandomFlip(0.5), "use them as they are"),
        (A.HorizontalFlip, "got the class HorizontalFlip"),
        ([A.HorizontalFlip(p=0.5)], "list"),
        (None, "NoneType"),
    ],
)
def test_bad_argument_names_what_is_accepted(bad, hint):
    with pytest.raises(ValueError, match="albumentations transform instance") as info:
        albumentations(bad)
    assert "A.Compose" in str(info.value) and hint in str(info.value)


@pytest.mark.slow
def test_import_is_lazy_and_a_missing_albumentations_says_how_to_install():
    code = textwrap.dedent(
        """
        import sys
        import augment.ops.adapters
        assert "albumentations" not in sys.modules, "imported albumentations eagerly"
        sys.modules["albumentations"] = None  # as if it were not installed
        try:
            augment.adapters.albumentations(object())
        except ImportError as exc:
            print(exc)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "pip install 'augment[albumentations]'" in out.stdout


@pytest.mark.slow
def test_loader_batches_are_bit_identical_on_every_backend():
    # 128 images, 8 batches: worker start-up (torch and albumentations imports) is the cost
    dataset = augment.ImageFolder(SAMPLE, SAMPLE / "labels.csv")
    transform = albumentations(pipeline(crop=224))
    epochs = {}
    for backend, workers in [("serial", 0), ("thread", 2), ("process", 2), ("torch", 2)]:
        with augment.Loader(
            dataset, transform, batch_size=16, backend=backend, workers=workers, seed=0
        ) as loader:
            epochs[backend, workers] = [images for images, _ in loader]
    reference = epochs["serial", 0]
    assert len(reference) == (len(dataset) + 15) // 16
    assert reference[0].shape == (16, 3, 224, 224) and reference[0].dtype == torch.uint8
    for key, batches in epochs.items():
        assert len(batches) == len(reference), key
        for number, (a, b) in enumerate(zip(reference, batches)):
            assert torch.equal(a, b), f"{key} batch {number} differs from serial"
    with augment.Loader(dataset, transform, batch_size=16, workers=0, seed=1) as loader:
        other_seed = next(iter(loader))[0]
    assert not torch.equal(other_seed, reference[0])  # the seed, not a constant, decides
