"""Optuna studies: configuration, storages, study lifecycle, the worker loop, the search space, the objectives
and the grid. Imports Optuna, `models` and the engine's pure config; torch only inside the functions that train."""
