"""The training loop every sample shares: data, loop, progress bar, evaluation, saving.

A sample's `train.py` is three lines: put this folder on `sys.path`, import its `model.py`, and
call `main(model, **hyper_parameters)`. Run one with `python samples/cnn_digits/train.py`.

The data is the UCI/sklearn handwritten digits set (1,797 8x8 images, 0..16 intensity),
stored once in `samples/data/digits.npz` with a fixed train/test split (1,437 / 360).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np

import modelkit.authoring as mk
from modelkit.authoring.random import Generator
from modelkit.authoring.utils.data import DataLoader, TensorDataset

DIGITS = Path(__file__).resolve().parent / "data" / "digits.npz"


def load_digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train (1437, 8, 8) uint8, y_train int64, x_test (360, 8, 8), y_test)."""
    with np.load(DIGITS) as data:
        return data["x_train"], data["y_train"], data["x_test"], data["y_test"]


class Progress:
    """One self-rewriting line per epoch on a terminal (stderr); silent when piped."""

    def __init__(self, epochs: int, steps: int, enabled: bool):
        self.epochs, self.steps, self.enabled = epochs, steps, enabled

    def update(self, epoch: int, step: int, running_loss: float) -> None:
        if not self.enabled:
            return
        width = 24
        filled = width * step // self.steps
        bar = "#" * filled + "." * (width - filled)
        end = "\n" if step == self.steps else ""
        sys.stderr.write(f"\repoch {epoch:>3}/{self.epochs} [{bar}] {step:>3}/{self.steps} "
                         f"loss {running_loss:.4f}{end}")
        sys.stderr.flush()


def accuracy(model: mk.nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    """Fraction of `x` whose argmax prediction equals `y`, in eval mode."""
    model.eval()
    correct = 0
    with mk.no_grad():
        for start in range(0, len(x), batch_size):
            logits = model(mk.tensor(x[start:start + batch_size]))
            correct += int((logits.argmax(dim=1).numpy() == y[start:start + batch_size]).sum())
    return correct / len(x)


def train(sample: ModuleType, *, epochs: int, lr: float, batch_size: int = 64,
          weight_decay: float = 1e-4, label_smoothing: float = 0.0, seed: int = 0,
          show_progress: bool | None = None, save: bool = True, data=load_digits) -> dict:
    """Train `sample.make_model()` with AdamW + OneCycleLR and cross-entropy on `data()`
    (default: the digits) -> (x_train, y_train, x_test, y_test) raw arrays that
    `sample.preprocess` prepares. Returns {"accuracy", "seconds", "epochs", "weights"} and saves
    weights.safetensors next to the sample's model.py (when `save`)."""
    mk.manual_seed(seed)
    x_train, y_train, x_test, y_test = data()
    x_train, x_test = sample.preprocess(x_train), sample.preprocess(x_test)
    model = sample.make_model()
    loader = DataLoader(TensorDataset(mk.tensor(x_train), mk.tensor(y_train)),
                        batch_size=batch_size, shuffle=True,
                        generator=Generator().manual_seed(seed))
    optimizer = mk.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = mk.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, epochs=epochs,
                                                steps_per_epoch=len(loader))
    loss_fn = mk.nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    progress = Progress(epochs, len(loader),
                        sys.stderr.isatty() if show_progress is None else show_progress)
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        running = None
        for step, (images, labels) in enumerate(loader, 1):
            loss = loss_fn(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            running = loss.item() if running is None else 0.9 * running + 0.1 * loss.item()
            progress.update(epoch, step, running)
    seconds = time.perf_counter() - start
    result = {"accuracy": accuracy(model, x_test, y_test), "seconds": seconds, "epochs": epochs,
              "weights": None}
    if save:
        path = Path(sample.__file__).resolve().parent / "weights.safetensors"
        mk.save(model.state_dict(), path)
        result["weights"] = str(path)
    return result


def main(sample: ModuleType, *, epochs: int, **hyper_parameters) -> dict:
    """Command line of every sample's train.py: `--epochs N`, `--seed S`, `--no-save`."""
    name = Path(sample.__file__).resolve().parent.name
    parser = argparse.ArgumentParser(description=f"Train the {name} sample.")
    parser.add_argument("--epochs", type=int, default=epochs, help=f"default {epochs}")
    parser.add_argument("--seed", type=int, default=0, help="RNG seed (default 0)")
    parser.add_argument("--no-save", action="store_true", help="do not write weights")
    args = parser.parse_args()
    if args.epochs < 1:
        parser.error(f"--epochs must be at least 1, got {args.epochs}")
    result = train(sample, epochs=args.epochs, seed=args.seed, save=not args.no_save,
                   **hyper_parameters)
    print(f"{name}: test accuracy {result['accuracy']:.2%} after {result['epochs']} epochs "
          f"({result['seconds']:.1f} s)")
    if result["weights"]:
        print(f"weights saved to {result['weights']}")
    return result
