"""Layer 3: running algorithms. The meta-training loop (``trainer``), evaluation over fixed
episodes with a 95 % interval (``evaluator``), model files and resumable checkpoints
(``checkpoint``), devices and precision (``devices``), cancel/pause (``control``), features
computed once for frozen backbones (``features``) and export to TorchScript / ONNX
(``export``). It may import ``metastudio.algorithms``, ``metastudio.data`` and
``metastudio.errors``; it never imports Qt, the plugin host or the application.
"""
