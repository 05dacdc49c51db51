"""What to tune: parameters (``params``), a validated ``Space`` of them (``space``), and the
search-space modules that export one (``modules``). Pure: no Ray, MLflow or torch.

Space modules import everything from here:

    >>> from hpsearch.space import Space, Float, PowerOfTwo
    >>> len(Space(Float("lr", 1e-4, 1e-2, log=True, grid=3), PowerOfTwo("batch_size", 32, 64)).grid())
    6
"""

from hpsearch.space.params import Choice, Config, Derived, Fixed, Float, Int, Param, PowerOfTwo, Scalar
from hpsearch.space.space import Grid, Space

__all__ = ["Choice", "Config", "Derived", "Fixed", "Float", "Grid", "Int", "Param", "PowerOfTwo", "Scalar", "Space"]
