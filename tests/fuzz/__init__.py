"""Fuzzing: shared targets (:mod:`.targets`), hypothesis sizes (:mod:`.profiles`), the atheris
entry point (``python -m tests.fuzz``) and the regression corpus of crash inputs (``corpus/``)."""
