"""Layer 1, the lowest: images, datasets, episodes and the caches of what is read from disk.

Here are reading and checking image files (``images``), walking files and folders and naming
each entry that can't be used (``listing``), reading JSON documents against a declared schema
(``jsondoc``), the project's image store (``imagestore``), few-shot datasets and the folder
loader (``datasets``), N-way K-shot episodes and support sets (``episodes``), downloads, atomic
file writes and temporary-file ownership (``fileio``), the feature cache and text progress bars. It imports only :mod:`metastudio.errors`: nothing from
``algorithms``, ``engine``, ``plugins``, ``app``, ``gui`` or ``cli``.
"""
