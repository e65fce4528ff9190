"""Errors a user can cause when configuring a teacher; each message says what to do."""


class TeacherConfigError(ValueError):
    """A teacher setting is invalid (unknown layer, timestep out of range, bad option)."""


class TeacherLoadError(OSError):
    """The ``pretrained`` model could not be found or loaded."""


class FeatureCacheNeverHitsWarning(UserWarning):
    """A teacher feature cache is configured, but random training transforms make every input
    new, so the cache never hits and only fills the disk (``common.teachers.cache_checks``)."""
