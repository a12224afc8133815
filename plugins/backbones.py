"""Built-in backbones: Conv-4 and ResNet-12."""

from metastudio.core.backbones import BUILTIN_BACKBONES
from metastudio.plugins import hookimpl


@hookimpl
def metastudio_backbones():
    return list(BUILTIN_BACKBONES)
