"""The errors of the feature cache, apart from :mod:`attrib.store` so that the modules it delegates to
(:mod:`attrib.shard_read`, :mod:`attrib.shard_write`) can raise them without importing it back.

Callers keep importing them from :mod:`attrib.store`, which re-exports them.
"""

from __future__ import annotations

from attrib.errors import AttribError


class StoreError(AttribError, RuntimeError):
    """The cache on disk is missing, incomplete, or not what the caller asked for."""


class ManifestMismatch(StoreError):
    """An existing feature set was made with different settings; the message lists each field."""


class ShardDamaged(StoreError):
    """A shard file is truncated, empty, not HDF5, or holds rows it should not; the message names it and
    the fix (rerun `attrib features`, which re-extracts damaged shards); ``why`` says what is wrong."""

    def __init__(self, message: str, why: str = ""):
        super().__init__(message)
        self.why = why
