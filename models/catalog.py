"""Names of the activations and initializations the MLPs support, without importing torch."""

ACTIVATION_NAMES = ("tanh", "relu", "gelu")
INIT_NAMES = ("default", "zeros", "normal", "constant", "xavier", "kaiming")
