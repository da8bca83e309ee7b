"""The reference's NumPy session as a script: make a 3x5 array and print what the session showed.

An ordinary Python program that knows nothing about Citadel. Each line prints what the interactive
session displayed for one expression (its repr), so the output reads like the reference's session.

usage: python session.py
"""

from __future__ import annotations

import numpy as np

a = np.arange(15).reshape(3, 5)
print(repr(a))  # >>> a
print(repr(a.shape))  # >>> a.shape
print(repr(a.ndim))  # >>> a.ndim
print(repr(a.dtype.name))  # >>> a.dtype.name
print(repr(a.itemsize))  # >>> a.itemsize
print(repr(type(a)))  # >>> type(a)
