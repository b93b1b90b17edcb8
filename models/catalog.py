"""Names of the activations and initializations the MLPs support, without importing torch."""

from dataclasses import dataclass

ACTIVATION_NAMES = ("tanh", "relu", "gelu")
INIT_NAMES = ("default", "zeros", "normal", "constant", "xavier", "kaiming")
# Each dataset's name and its folder in torchvision's layout (ROOT/FOLDER/raw/*.gz); all are 28x28, 10 classes.
DATASET_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "kmnist": "KMNIST"}
TRAINING_IMAGES = 60_000  # in each dataset's training set
VALIDATION_SIZE = 10_000  # held out of the training set, seeded, to select on


@dataclass(frozen=True)
class Init:
    """How to set the starting weights; `value` is the std for normal and the value for constant."""

    name: str = "default"
    value: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in INIT_NAMES:
            raise ValueError(f"unknown init {self.name!r}; choose from {', '.join(INIT_NAMES)}")

    def label(self) -> str:
        return f"{self.name}({self.value:g})" if self.name in ("normal", "constant") else self.name
