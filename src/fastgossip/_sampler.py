"""The sampler implementation in use: compiled, or the pure-Python twin.

The rest of the package imports from here, never from _sampler_c/_sampler_py directly.
Type checkers read the compiled module's stub (_sampler_c.pyi); at run time the
names come from the module ``FASTGOSSIP_NO_EXTENSIONS`` selects (see _impl.py).
"""

from typing import TYPE_CHECKING

from ._impl import IMPLEMENTATION, not_built

__all__ = ["ZERO_SEED", "XorShift64"]

if not TYPE_CHECKING and IMPLEMENTATION == "python":
    from ._sampler_py import ZERO_SEED, XorShift64
else:
    try:
        from ._sampler_c import ZERO_SEED, XorShift64
    except ImportError as exc:
        raise not_built("sampler", exc) from exc
