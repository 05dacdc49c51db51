"""A small 1-D CNN on MNIST-1D, with the linear-scaling rule for the learning rate.

``lr`` is derived, not tuned: ``lr = base_lr * batch_size / 256`` (Goyal et al., 2017), so a
larger batch gets a proportionally larger step and the search compares like with like.
"""

from hpsearch.space import Choice, Derived, Fixed, Float, Int, PowerOfTwo, Space

SPACE = Space(
    Fixed("model", "cnn1d"),
    Float("base_lr", 1e-4, 1e-2, log=True, grid=3),
    PowerOfTwo("batch_size", 32, 256),
    Derived("lr", "base_lr * batch_size / 256"),
    Float("weight_decay", 1e-5, 1e-3, log=True, grid=2),
    Float("dropout", 0.0, 0.3, grid=2),
    PowerOfTwo("width", 16, 64),  # channels of the first convolution; doubled per block
    Int("depth", 1, 3),  # convolution blocks
    Choice("optimizer", ["adamw", "sgd"]),
    Float("momentum", 0.8, 0.99, when={"optimizer": "sgd"}, grid=2),
    Int("warmup_epochs", 0, 2),
)
METRIC = "val_acc"
MODE = "max"
MAX_EPOCHS = 27
DATASET = "mnist1d"
