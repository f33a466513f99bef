"""Errors of the edge package: one base, so callers can catch what the edge raises."""


class EdgeError(Exception):
    """Base of every error the edge raises on purpose."""


class SourceError(EdgeError):
    """A camera could not be opened or stopped delivering."""


class DiskSpaceError(EdgeError):
    """Not enough free space for what was asked."""


class RecordingConflict(EdgeError):
    """A recording is already running, or none is running to stop."""


class NoCameras(EdgeError):
    """The room has no cameras configured yet, so there is nothing to record."""
