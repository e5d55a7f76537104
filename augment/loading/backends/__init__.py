"""Parallel backends behind one interface (see ``base``), found by name in a registry."""

from augment.loading.backends.base import (
    Backend,
    Deferred,
    Done,
    Handle,
    check_name,
    create,
    names,
    register,
)

__all__ = ["Backend", "Deferred", "Done", "Handle", "check_name", "create", "names", "register"]
