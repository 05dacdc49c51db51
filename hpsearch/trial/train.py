"""The reference PyTorch trainable for the shipped space modules.

``train(config)`` builds the model the config names (``mlp`` or ``cnn1d``; width, depth, dropout,
batch norm), an AdamW or SGD-with-momentum optimizer with weight decay, optional linear warm-up
and cosine decay of the learning rate, and reports ``train_loss``, ``val_loss`` and ``val_acc``
each epoch with a checkpoint (kept where the sweep's checkpoint policy says), so a paused or
retried trial resumes instead of restarting. It runs on the GPU a trial is given, if any, and
ends a diverged trial (NaN/inf loss) as failed. In a trial with several workers it trains under
DDP (``hpsearch.ddp``): each worker takes its shard of every batch.

Example:
    >>> import hpsearch
    >>> from hpsearch.trial.data import load_dataset
    >>> hpsearch.session.history.clear()
    >>> train({"model": "mlp", "lr": 1e-2, "batch_size": 128, "width": 32, "depth": 1},
    ...       data=load_dataset("digits"), max_epochs=2)
    >>> [r["epoch"] for r in hpsearch.session.history]
    [1, 2]
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import nn

import hpsearch.trial.ddp as ddp
from hpsearch.trial.data import Dataset, load_dataset
from hpsearch.trial.session import check_finite, load_checkpoint, report

DEFAULT_EPOCHS = 10


def _norm(kind: str, width: int) -> nn.Module:
    """The normalisation layer ``norm`` names; rejects any other value instead of silently dropping it."""
    if not kind or kind == "none":
        return nn.Identity()
    if kind == "batch":
        return nn.BatchNorm1d(width)
    raise ValueError(f"norm: must be 'batch' or 'none', got {kind!r}")


def build_model(config: Mapping[str, Any], num_features: int, num_classes: int) -> nn.Module:
    """The network a config describes.

    Example:
        >>> build_model({"model": "mlp", "width": 8, "depth": 2}, 40, 10)(torch.zeros(3, 40)).shape
        torch.Size([3, 10])
    """
    kind = config.get("model", "mlp")
    width, depth = int(config.get("width", 128)), int(config.get("depth", 2))
    dropout, norm = float(config.get("dropout", 0.0)), config.get("norm", "batch")
    if kind == "mlp":
        layers: list[nn.Module] = []
        fan_in = num_features
        for _ in range(depth):
            layers += [nn.Linear(fan_in, width), _norm(norm, width), nn.ReLU(), nn.Dropout(dropout)]
            fan_in = width
        return nn.Sequential(*layers, nn.Linear(fan_in, num_classes))
    if kind == "cnn1d":
        layers = [nn.Unflatten(1, (1, num_features))]
        channels_in, channels = 1, width
        for _ in range(depth):
            layers += [
                nn.Conv1d(channels_in, channels, kernel_size=5, padding=2),
                _norm(norm, channels),
                nn.ReLU(), nn.MaxPool1d(2), nn.Dropout(dropout),
            ]
            channels_in, channels = channels, channels * 2
        return nn.Sequential(*layers, nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(channels_in, num_classes))
    raise ValueError(f"model: must be 'mlp' or 'cnn1d', got {kind!r}")


def build_optimizer(config: Mapping[str, Any], params) -> torch.optim.Optimizer:
    lr, wd = float(config.get("lr", 1e-3)), float(config.get("weight_decay", 0.0))
    name = config.get("optimizer", "adamw")
    if name == "adamw":  # decoupled weight decay (Loshchilov & Hutter)
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=wd, momentum=float(config.get("momentum", 0.0)))
    raise ValueError(f"optimizer: must be 'adamw' or 'sgd', got {name!r}")


def lr_factor(epoch: int, max_epochs: int, warmup_epochs: int, schedule: str) -> float:
    """Multiplier of the base learning rate for a 1-based epoch: linear warm-up, then cosine or constant.

    Example:
        >>> [round(lr_factor(e, 4, 1, "cosine"), 3) for e in range(1, 5)]
        [0.5, 1.0, 0.75, 0.25]
    """
    if epoch <= warmup_epochs:
        return epoch / (warmup_epochs + 1)
    if schedule == "cosine" and max_epochs > warmup_epochs:
        progress = (epoch - warmup_epochs - 1) / (max_epochs - warmup_epochs)
        return 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0


def train(config: Mapping[str, Any], data: Dataset | None = None, max_epochs: int | None = None) -> None:
    """Train the model of ``config`` for up to ``max_epochs`` epochs, reporting each one."""
    data = data if data is not None else load_dataset(config.get("dataset", "mnist1d"))
    max_epochs = int(max_epochs or config.get("max_epochs", DEFAULT_EPOCHS))
    seed = int(config.get("seed", 0))
    torch.manual_seed(seed)
    dev = ddp.device()
    model = build_model(config, data.num_features, data.num_classes).to(dev)
    optimizer = build_optimizer(config, model.parameters())
    base_lr = optimizer.param_groups[0]["lr"]

    start = 1
    state = load_checkpoint()
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["epoch"] + 1
    net = ddp.prepare_model(model)  # DDP with several workers: gradients averaged at each backward

    # Arrays from Ray's object store are read-only; torch.tensor copies (the data sets are small).
    x_tr = torch.tensor(data.x_train, device=dev).flatten(1)
    y_tr = torch.tensor(data.y_train, device=dev)
    x_va = torch.tensor(data.x_val, device=dev).flatten(1)
    y_va = torch.tensor(data.y_val, device=dev)
    # batch_size is the effective batch of one optimizer step; each of the N workers takes 1/N of it,
    # so the gradient DDP averages is that of the same batch_size samples a single process would use.
    batch = max(1, int(config.get("batch_size", 128)) // ddp.world_size())
    warmup, schedule = int(config.get("warmup_epochs", 0)), config.get("lr_schedule", "cosine")
    loss_fn = nn.CrossEntropyLoss()
    # One permutation per epoch from seed and epoch only: identical whether the trial resumed or not,
    # and for any number of workers (worker r takes positions r, r+N, ... of it).
    shard = ddp.sampler(len(x_tr), seed=seed * 100_003)

    for epoch in range(start, max_epochs + 1):
        for group in optimizer.param_groups:
            group["lr"] = base_lr * lr_factor(epoch, max_epochs, warmup, schedule)
        net.train()
        shard.set_epoch(epoch)
        order = torch.tensor(list(shard), device=dev)
        total, seen = 0.0, 0
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            if len(idx) < 2 and seen:  # batch norm cannot train on a single sample (every shard has the same length)
                continue
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(net(x_tr[idx]), y_tr[idx])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        total, seen = ddp.sum_across(total, seen)
        train_loss = total / max(seen, 1)
        net.eval()
        with torch.no_grad():
            logits = net(x_va)
            val_loss = loss_fn(logits, y_va).item()
            val_acc = (logits.argmax(1) == y_va).float().mean().item()
        check_finite(epoch, train_loss=train_loss, val_loss=val_loss)
        report(
            epoch=epoch, train_loss=train_loss, val_loss=val_loss, val_acc=val_acc,
            lr=optimizer.param_groups[0]["lr"],
            # Built only when the sweep keeps this epoch's checkpoint (see session.CheckpointPolicy).
            checkpoint=lambda: {"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict()},
        )
