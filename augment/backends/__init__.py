"""Parallel backends behind one interface (see ``base``), found by name in a registry."""

from augment.backends.base import Backend, Done, Handle, create, names, register

__all__ = ["Backend", "Done", "Handle", "create", "names", "register"]
