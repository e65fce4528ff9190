"""Errors a user can cause when configuring a teacher; each message says what to do."""


class TeacherConfigError(ValueError):
    """A teacher setting is invalid (unknown layer, timestep out of range, bad option)."""


class TeacherLoadError(OSError):
    """The ``pretrained`` model could not be found or loaded."""
