"""Transforms of every shape the library promises, called the one way the pipeline calls them.

A transform may be written ``(img, rng) -> img`` (augment's own, or a function of yours that
draws from the sample's generator) or ``(img) -> img`` (a lambda, ``np.fliplr``, a
``functools.partial``). Wherever a transform may stand (the Loader's ``transform``, a step of
``Compose``, a step of a config's pipeline, which is built as a ``Compose``), it is read once,
when that is built, and made into a callable ``(img, rng) -> img``; a callable that can take
neither shape is refused there with a ``ValueError`` naming it and its signature, not on a
worker at batch N.

Which shape a callable has is read from its signature:

- two required positional parameters: ``(img, rng)``;
- one required positional parameter: ``(img)``, unless its second parameter is named ``rng``
  (or ``generator``, ``random_state``), as in ``def jitter(img, rng=None)``. A second
  parameter with another name and a default (``np.rot90(m, k=1)``, ``partial(f, angle=30)``)
  is not handed the generator;
- ``*args``: ``(img, rng)``;
- no signature (a builtin or a numpy ufunc): ``(img)``;
- a ``torch.nn.Module``: its ``forward``.

An albumentations transform is wrapped by ``augment.adapters.albumentations`` so that it
draws from the sample's rng.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable

RNG_NAMES = ("rng", "generator", "random_state")
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_ACCEPTED = "a callable (img, rng) -> img or (img) -> img"


class ImageOnly:
    """A transform that takes the image alone, called as ``(img, rng)`` like the others."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable):
        self.fn = fn

    def __call__(self, img, rng):
        return self.fn(img)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ImageOnly) and self.fn == other.fn

    def __hash__(self) -> int:
        return hash(self.fn)

    def __getstate__(self):
        return self.fn

    def __setstate__(self, fn) -> None:
        self.fn = fn

    def __repr__(self) -> str:
        return repr(self.fn)


def as_sample_transform(transform, where: str = "transform") -> Callable | None:
    """``transform`` as a callable ``(img, rng) -> img``; None for None.

    ``where`` names it in the ``ValueError`` raised for something that is not a transform
    (``"transforms[2]"`` for a step of a Compose). See the module docstring for how the
    shape is read."""
    if transform is None:
        return None
    if not callable(transform):
        raise ValueError(f"{where} must be {_ACCEPTED} (or None), got {_short(transform)}")
    if isinstance(transform, ImageOnly):
        return transform
    if isinstance(transform, type):
        raise ValueError(
            f"{where} is the class {transform.__name__}, not a transform: build one, "
            f"e.g. {transform.__name__}(...)"
        )
    if type(transform).__module__.split(".")[0] == "albumentations":
        from augment.ops import adapters

        return adapters.albumentations(transform)
    return transform if takes_rng(transform, where) else ImageOnly(transform)


def takes_rng(fn: Callable, where: str = "transform") -> bool:
    """Whether ``fn`` is called ``(img, rng)`` (True) or ``(img)`` (False); a ``ValueError``
    naming ``where`` when it can be called neither way."""
    torch = sys.modules.get("torch")
    target = fn.forward if torch is not None and isinstance(fn, torch.nn.Module) else fn
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):  # a builtin without a signature: the image alone
        return False
    params = list(signature.parameters.values())
    positional = [p for p in params if p.kind in _POSITIONAL]
    required = [p for p in positional if p.default is inspect.Parameter.empty]
    keyword_only = [
        p.name
        for p in params
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty
    ]
    star = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)
    problem = None
    if keyword_only:
        problem = f"it requires the keyword argument(s) {', '.join(keyword_only)}"
    elif len(required) > 2:
        problem = f"it requires {len(required)} positional arguments"
    elif not positional and not star:
        problem = "it takes no positional argument"
    if problem is not None:
        raise ValueError(
            f"{where} {_short(fn)} must be {_ACCEPTED}, but {problem} (signature {signature})"
        )
    if len(required) == 2 or (not positional and star):
        return True
    if len(required) == 1 and len(positional) == 1:
        return star
    return len(positional) >= 2 and positional[1].name in RNG_NAMES


def _short(obj, limit: int = 80) -> str:
    text = repr(obj)
    return text if len(text) <= limit else text[: limit - 3] + "..."
