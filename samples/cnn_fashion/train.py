"""Train the CNN on Fashion-MNIST and save weights.safetensors:
`python samples/cnn_fashion/train.py` (see model.py for getting the data)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import model  # noqa: E402  (this folder's model.py)
from training import main  # noqa: E402  (samples/training.py)

if __name__ == "__main__":
    try:
        main(model, epochs=4, lr=1e-2, batch_size=128, data=model.load_data)
    except FileNotFoundError as missing:
        sys.exit(f"cnn_fashion: {missing}")
