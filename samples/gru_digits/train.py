"""Train the GRU on the digits and save weights.safetensors: `python samples/gru_digits/train.py`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import model  # noqa: E402  (this folder's model.py)
from training import main  # noqa: E402  (samples/training.py)

if __name__ == "__main__":
    main(model, epochs=30, lr=1e-2, batch_size=64)
