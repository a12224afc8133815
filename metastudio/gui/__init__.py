"""The desktop app (PySide6). Qt lives only here: widgets use the application layer
(:mod:`metastudio.app`) through its public API, and heavy work runs in worker threads that
send plain Python numbers and strings back to the GUI thread."""
