"""MetaStudio's built-in plugins, installed as the package ``metastudio_builtins``.

``algorithms/`` holds the nine algorithms (one module and one entry point each), ``backbones/``
the embedding networks (Conv-4, ResNet-12, EfficientNet-Lite0 and the downloadable ones) and
``datasets/`` Omniglot, mini-ImageNet and any folder of class folders. They register through
the ``metastudio`` entry-point group exactly as a third-party package would (see
``[project.entry-points.metastudio]`` in ``pyproject.toml``) and import nothing from MetaStudio
but :mod:`metastudio.api`, so they are the reference examples for plugin authors.
"""
