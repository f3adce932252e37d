"""The data layer's errors: each names the file or folder and what was expected."""

__all__ = ["BadSourceFile", "UnusedSourceFile", "LayoutNotRecognised", "StrictBuildError"]


class BadSourceFile(ValueError):
    """A source file that cannot become a sample; ``reason`` goes to the manifest."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class UnusedSourceFile(BadSourceFile):
    """A sound file of the layout that this task does not use (e.g. an EEG baseline run): dropped, with the reason,
    and no reason for ``--strict`` to stop."""


class LayoutNotRecognised(ValueError):
    """A ``--source`` folder that matches none of a task's source layouts."""


class StrictBuildError(ValueError):
    """Raised under ``on_bad_files="error"`` at the first rejected file."""
