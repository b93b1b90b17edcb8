"""The training engine: MNIST on the device, the training loop, the hand-written step, the sparse first layer
and the fused update. Imports torch, `models` and `search.checks`/`errors`; never Optuna, never a study."""
