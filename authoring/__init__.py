"""modelkit.authoring: a PyTorch-like framework on numpy. `import modelkit.authoring as mk`.

Example:
    >>> import modelkit.authoring as mk
    >>> _ = mk.manual_seed(0)
    >>> w = mk.randn(3, 1, requires_grad=True)
    >>> x, y = mk.randn(8, 3), mk.randn(8, 1)
    >>> loss = ((x @ w - y) ** 2).mean()
    >>> loss.backward()
    >>> w.grad.shape
    modelkit.Size([3, 1])
"""

# ---- core: tensor, dtypes, devices (issue 2) ----------------------------------------------
from modelkit.authoring.tensor import Size, Tensor
from modelkit.authoring.dtypes import (  # noqa: A004  (torch's names shadow builtins here)
    bool_ as bool,
    double,
    dtype,
    float,
    float16,
    float32,
    float64,
    half,
    int,
    int8,
    int16,
    int32,
    int64,
    long,
    short,
    uint8,
)
from modelkit.authoring.device import device
from modelkit.authoring import cuda
from modelkit.authoring.errors import DTypeError, ShapeError
from modelkit.authoring.grad_mode import (
    enable_grad,
    inference_mode,
    is_grad_enabled,
    no_grad,
    set_grad_enabled,
)
from modelkit.authoring.random import (
    Generator,
    default_generator,
    get_rng_state,
    initial_seed,
    manual_seed,
    seed,
    set_rng_state,
)
from modelkit.authoring.creation import (
    arange,
    as_tensor,
    empty,
    empty_like,
    eye,
    from_numpy,
    full,
    full_like,
    linspace,
    ones,
    ones_like,
    rand,
    rand_like,
    randint,
    randint_like,
    randn,
    randn_like,
    randperm,
    tensor,
    zeros,
    zeros_like,
)

# ---- ops (each goes through the op registry, modelkit.authoring.ops.registry.OPS) ---------
from modelkit.authoring.ops.elementwise import (  # noqa: A004
    abs,
    add,
    ceil,
    clamp,
    clip,
    cos,
    div,
    eq,
    erf,
    exp,
    floor,
    floor_divide,
    ge,
    gelu,
    greater,
    greater_equal,
    gt,
    isfinite,
    isinf,
    isnan,
    le,
    leaky_relu,
    less,
    less_equal,
    log,
    log1p,
    logical_and,
    logical_not,
    logical_or,
    logical_xor,
    lt,
    masked_fill,
    maximum,
    minimum,
    mul,
    ne,
    neg,
    negative,
    not_equal,
    pow,
    reciprocal,
    relu,
    remainder,
    round,
    rsqrt,
    sigmoid,
    sign,
    silu,
    sin,
    softplus,
    sqrt,
    square,
    sub,
    tanh,
    true_divide,
    where,
)
from modelkit.authoring.ops.reduce import (  # noqa: A004
    all,
    amax,
    amin,
    any,
    argmax,
    argmin,
    cumsum,
    logsumexp,
    max,
    mean,
    min,
    prod,
    std,
    sum,
    var,
)
from modelkit.authoring.ops.shape import (
    broadcast_to,
    cat,
    chunk,
    clone,
    concat,
    concatenate,
    flatten,
    is_tensor,
    permute,
    reshape,
    split,
    squeeze,
    stack,
    swapaxes,
    t,
    transpose,
    unbind,
    unsqueeze,
)
from modelkit.authoring.ops.indexing import gather, index_select, nonzero
from modelkit.authoring.ops.linalg import bmm, matmul, mm
from modelkit.authoring.ops import methods as _methods  # noqa: F401  (attaches Tensor methods)
from modelkit.authoring import autograd
from modelkit.authoring import nn
from modelkit.authoring.nn.functional import log_softmax, softmax

# ---- training API (issue 3): optim, utils, save/load -------------------------------------
from modelkit.authoring import optim, utils
from modelkit.authoring.serialization import load, save
