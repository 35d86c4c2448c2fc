"""The sampler implementation in use: compiled, or the pure-Python twin.

The rest of the package imports from here, never from _sampler_c/_sampler_py directly.
"""

from ._impl import load

_mod = load("sampler")
globals().update({k: v for k, v in vars(_mod).items() if not k.startswith("__")})
del load
