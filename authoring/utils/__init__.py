"""`mk.utils`: data loading (`mk.utils.data`), as `torch.utils`.

Example:
    >>> import modelkit.authoring as mk
    >>> mk.utils.data.DataLoader.__name__
    'DataLoader'
"""

from modelkit.authoring.utils import data
