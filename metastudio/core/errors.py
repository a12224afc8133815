"""Exceptions of the engine. Every message is written for the person who will read it."""


class MetaStudioError(Exception):
    """Base class of every error the engine raises on purpose (bad input, missing file, ...).

    The CLI prints ``str(error)`` on one line and exits non-zero; the GUI shows it in a dialog.
    """


class ImageLoadError(MetaStudioError):
    """An image file could not be used. ``path`` names the file; ``reason`` says why in everyday
    words (what a person sees next to the file); ``detail`` is the technical wording (the image
    library's own message, for a Details pane or a bug report), ``""`` when there is nothing to
    add. ``str(error)`` is ``cannot use image 'PATH': REASON``."""

    def __init__(self, path: str, reason: str, detail: str = ""):
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"cannot use image '{self.path}': {reason}")

    def __reduce__(self):  # pickles with its three fields (the base class would pass the message)
        return type(self), (self.path, self.reason, self.detail)


class DatasetError(MetaStudioError):
    """A dataset is missing, empty, corrupt or too small for the episodes asked of it."""


class CheckpointError(MetaStudioError):
    """A model or checkpoint file could not be read or written."""


class FixedHyperParameterError(MetaStudioError, ValueError):
    """A trained model was asked to use another value of a hyperparameter that its training fixed
    (a ``training`` or ``architecture`` one; see :class:`metastudio.core.algorithm.HyperParameter`)."""


class ProjectError(MetaStudioError):
    """A ``.metastudio`` project file could not be opened or saved (the message names the file)."""


class TrainingError(MetaStudioError):
    """Meta-training cannot go on (for example the loss became NaN)."""


class UnknownComponentError(MetaStudioError, KeyError):
    """No loaded plugin provides the algorithm, backbone or dataset asked for."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
