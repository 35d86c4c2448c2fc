# cython: language_level=3
"""Compiled frame codec. Pure-Python twin: _codec_py.py."""

include "_messages_c.pxi"
