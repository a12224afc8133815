"""Layer 5: the use cases the command line and the GUI share, headless. The catalogue of models
(shipped, in the user's folder, by file: ``catalogue``), planning and running a meta-training
run (``runs``), classifying pictures with a model adapted to a support set (``session``), sorting pictures
into class folders with an undo log (``sorting``, ``sortlog``), comparing models on a person's
examples (``compare``) and
projects: what a person builds and the ``.metastudio`` file that keeps it (``project``).
It may import every layer below (``plugins``, ``engine``, ``algorithms``, ``data``), never
``metastudio.gui`` or ``metastudio.cli``, and never Qt.
"""
