"""The data layer's errors: each names the file or folder and what was expected."""

__all__ = [
    "BadSourceFile", "IGNORED", "IgnoredSourceFile", "UnusedSourceFile", "LayoutNotRecognised", "StrictBuildError",
    "SECOND_COPY",
]

#: Prefix of an ignored file's reason (after the build's ``not used: ``).
IGNORED = "ignored: "
#: How the reason of a file in an archive's second copy of the tree begins (Kaggle's ``chest_xray/chest_xray/``): not
#: counted with the release's files (``SourceSpec.expected_files``).
SECOND_COPY = "not used: a second copy of the tree"


class BadSourceFile(ValueError):
    """A source file that cannot become a sample; ``reason`` goes to the manifest."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class UnusedSourceFile(BadSourceFile):
    """A sound file of the layout that this task does not use (e.g. an EEG baseline run): dropped, with the reason,
    and no reason for ``--strict`` to stop."""


class IgnoredSourceFile(UnusedSourceFile):
    """A file of a download that holds no data of any source (system litter, documents, archives): its manifest
    status is ``ignored``, its reason starts with ``IGNORED``; no error, and no reason for ``--strict`` to stop."""

    def __init__(self, reason: str):
        super().__init__(reason if reason.startswith(IGNORED) else IGNORED + reason)


class LayoutNotRecognised(ValueError):
    """A ``--source`` folder that matches none of a task's source layouts."""


class StrictBuildError(ValueError):
    """Raised under ``on_bad_files="error"`` at the first rejected file."""
