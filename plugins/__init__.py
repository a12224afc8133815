"""MetaStudio's built-in plugins.

They register through the ``metastudio`` entry-point group exactly as a third-party package
would (see ``[project.entry-points.metastudio]`` in ``pyproject.toml``), so they are the
reference examples for plugin authors.
"""
