"""The default deep-learning space: an MLP on MNIST-1D, trained by hpsearch's reference trainable.

Ranges are the usual defaults from practice: learning rate and weight decay on a log scale,
batch size and width as powers of two, AdamW for decoupled weight decay, and SGD's momentum
only where SGD is chosen.
"""

from hpsearch.space import Choice, Fixed, Float, Int, PowerOfTwo, Space

SPACE = Space(
    Fixed("model", "mlp"),
    Float("lr", 1e-5, 1e-1, log=True, grid=3),
    Float("weight_decay", 1e-5, 1e-3, log=True, grid=2),
    Float("dropout", 0.0, 0.5, grid=2),
    PowerOfTwo("batch_size", 32, 256),
    PowerOfTwo("width", 32, 256),
    Int("depth", 1, 4),
    Choice("optimizer", ["adamw", "sgd"]),
    Float("momentum", 0.8, 0.99, when={"optimizer": "sgd"}, grid=2),
)
METRIC = "val_acc"  # validation accuracy, reported every epoch by hpsearch.train
MODE = "max"
MAX_EPOCHS = 27
DATASET = "mnist1d"
