"""Neural-network building blocks, `mk.nn` (layers and Module join with the nn issue).

Example:
    >>> import modelkit.authoring as mk
    >>> mk.nn.functional.relu(mk.tensor([-1.0, 1.0]))
    tensor([0., 1.])
"""

from modelkit.authoring.nn import functional  # noqa: F401

# --- layers, losses, containers and init (nn/optim/data issue) -------------------------------
from modelkit.authoring.nn import init, utils
from modelkit.authoring.nn.activation import (
    GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, SiLU, Softmax, Tanh)
from modelkit.authoring.nn.attention import MultiheadAttention
from modelkit.authoring.nn.containers import ModuleDict, ModuleList, Sequential
from modelkit.authoring.nn.conv import Conv1d, Conv2d, ConvTranspose2d
from modelkit.authoring.nn.linear import Flatten, Identity, Linear
from modelkit.authoring.nn.loss import (
    BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, L1Loss, MSELoss, NLLLoss, SmoothL1Loss)
from modelkit.authoring.nn.module import (
    Module, register_module_forward_hook, register_module_forward_pre_hook)
from modelkit.authoring.nn.norm import BatchNorm1d, BatchNorm2d, GroupNorm, LayerNorm
from modelkit.authoring.nn.parameter import Parameter
from modelkit.authoring.nn.pooling import AdaptiveAvgPool2d, AvgPool2d, Dropout, MaxPool2d
from modelkit.authoring.nn.rnn import GRU, LSTM
from modelkit.authoring.nn.sparse import Embedding
from modelkit.authoring.nn.transformer import TransformerEncoder, TransformerEncoderLayer
