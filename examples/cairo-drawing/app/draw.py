"""The reference's pycairo drawing: a gradient square with a stroked path, saved as example.png.

An ordinary Python program that knows nothing about Citadel. Run by Citadel, its output directory
/data/out is an encrypted volume: the host stores the picture but can neither see nor change it.

usage: python draw.py [OUTPUT_DIR]    (default: /data/out)

The drawing calls are the reference's. The one change: the PNG is written through a Python file
object, not a file name. Given a name, cairo opens the file itself, in C, where no Python-level
shield sees it: inside the engine it would bypass the volume (the write fails if the mount path
does not exist on the host, and lands on the host's disk in the clear if it does).
"""

from __future__ import annotations

import math
import os
import sys

import cairo

out_dir = sys.argv[1] if len(sys.argv) > 1 else "/data/out"

WIDTH, HEIGHT = 256, 256

surface = cairo.ImageSurface(cairo.FORMAT_ARGB32, WIDTH, HEIGHT)
ctx = cairo.Context(surface)
ctx.scale(WIDTH, HEIGHT)  # Normalizing the canvas

pat = cairo.LinearGradient(0.0, 0.0, 0.0, 1.0)
pat.add_color_stop_rgba(1, 0.7, 0, 0, 0.5)  # First stop, 50% opacity
pat.add_color_stop_rgba(0, 0.9, 0.7, 0.2, 1)  # Last stop, 100% opacity

ctx.rectangle(0, 0, 1, 1)  # Rectangle(x, y, width, height)
ctx.set_source(pat)
ctx.fill()
ctx.translate(0.1, 0.1)  # Changing the current transformation matrix

ctx.move_to(0, 0)
# Arc(cx, cy, radius, start_angle, stop_angle)
ctx.arc(0.2, 0.1, 0.1, -math.pi / 2, 0)
ctx.line_to(0.5, 0.1)  # Line to (x,y)
# Curve(x1, y1, x2, y2, x3, y3)
ctx.curve_to(0.5, 0.2, 0.5, 0.4, 0.2, 0.8)
ctx.close_path()

ctx.set_source_rgb(0.3, 0.2, 0.5)  # Solid color
ctx.set_line_width(0.02)
ctx.stroke()

path = os.path.join(out_dir, "example.png")
with open(path, "wb") as png:
    surface.write_to_png(png)  # Output to PNG
print(f"wrote {path} ({WIDTH}x{HEIGHT})")
