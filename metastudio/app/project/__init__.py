"""Projects: what a person builds in the app, and the ``.metastudio`` file that holds it.

A project has named, coloured classes, each holding support images; unlabelled query images;
the choice of model (and its hyperparameter overrides); free settings of the GUI; and any
models trained in it.

* :mod:`~metastudio.app.project.model`: :class:`Project`, :class:`ClassEntry` and
  :class:`ImageItem`, and the project's working folder of image copies and models;
* :mod:`~metastudio.app.project.manifest`: the manifest (``manifest.json``) a project file
  declares itself in, and the checks it passes;
* :mod:`~metastudio.app.project.archive`: the ``.metastudio`` zip archive, written atomically
  and unpacked safely;
* :mod:`~metastudio.app.project.recovery`: autosaves, and finding those of crashed sessions;
* :mod:`~metastudio.app.project.cleanup`: working folders named after their process, and the
  removal of those (and of half-written saves) that a process which has ended left behind.

Nothing is pickled; this package imports no Qt.
"""

from __future__ import annotations

from metastudio.app.project.manifest import FORMAT, FORMAT_VERSION, MANIFEST
from metastudio.app.project.model import DEFAULT_COLOURS, DEFAULT_MODEL, PROJECT_SUFFIX, ClassEntry, ImageItem, Project
from metastudio.app.project.recovery import Recovery, RecoveryInfo, recovery_dir

__all__ = [
    "DEFAULT_COLOURS",
    "DEFAULT_MODEL",
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "PROJECT_SUFFIX",
    "ClassEntry",
    "ImageItem",
    "Project",
    "Recovery",
    "RecoveryInfo",
    "recovery_dir",
]
