"""Training: the epoch loop every command shares (``loop``), what it iterates (``data``; ``scene_data`` for whole
scenes), where it runs (``runtime``), how a model is scored (``evaluate``; ``scene_eval`` for whole scenes), the
optimiser (``optim``), the shared config and setup (``setup``), and ``kdpc train`` itself (``train``, with the files
it writes next to its checkpoint in ``run_files``)."""
