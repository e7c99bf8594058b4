"""Training: the epoch loop every command shares (``loop``), what it iterates (``data``), where it runs
(``runtime``), how a model is scored (``evaluate``), the optimiser (``optim``), the shared config and setup
(``setup``), and ``kdpc train`` itself (``train``)."""
