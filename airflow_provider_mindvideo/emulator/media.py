"""The emulator's outputs: a PNG you can recognise, and a placeholder MP4. Standard library only.

The PNG takes its background colour from the first colour word in the prompt (English or
Chinese), or from a hash of the prompt, its aspect ratio from ``size``, and shows the prompt's
text in a 5x7 bitmap font: Latin letters (accents dropped), digits and common punctuation.
Characters the font has no glyph for (Chinese, Japanese, emoji, ...) are left out: a row of
empty boxes told the viewer nothing, and a font that has them would be a dependency on what a
machine happens to have installed. The full prompt is stored in an ``iTXt`` chunk.
"""

from __future__ import annotations

import hashlib
import re
import struct
import textwrap
import unicodedata
import zlib
from collections.abc import Mapping
from typing import Any

LONG_SIDE = 384
_SCALE = 2

_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (200, 40, 40),
    "红": (200, 40, 40),
    "orange": (235, 130, 30),
    "橙": (235, 130, 30),
    "橘": (235, 130, 30),
    "yellow": (230, 200, 40),
    "黄": (230, 200, 40),
    "gold": (212, 175, 55),
    "金": (212, 175, 55),
    "green": (50, 150, 70),
    "绿": (50, 150, 70),
    "blue": (40, 90, 200),
    "蓝": (40, 90, 200),
    "purple": (120, 60, 170),
    "紫": (120, 60, 170),
    "pink": (230, 120, 170),
    "粉": (230, 120, 170),
    "black": (20, 20, 20),
    "黑": (20, 20, 20),
    "white": (240, 240, 240),
    "白": (240, 240, 240),
}

# 5x7 glyphs, one hex byte per row (low 5 bits, MSB on the left).
_FONT: dict[str, str] = {
    "A": "0E11111F111111", "B": "1E11111E11111E", "C": "0E11101010110E", "D": "1C12111111121C",
    "E": "1F10101E10101F", "F": "1F10101E101010", "G": "0E11101711110F",
    "H": "1111111F111111", "I": "0E04040404040E", "J": "0702020202120C", "K": "11121418141211",
    "L": "1010101010101F", "M": "111B1515111111", "N": "11111915131111", "O": "0E11111111110E",
    "P": "1E11111E101010", "Q": "0E11111115120D", "R": "1E11111E141211", "S": "0F10100E01011E",
    "T": "1F040404040404", "U": "1111111111110E", "V": "11111111110A04", "W": "1111111515150A",
    "X": "11110A040A1111", "Y": "1111110A040404", "Z": "1F01020408101F", "0": "0E11131519110E",
    "1": "040C040404040E", "2": "0E11010204081F", "3": "1F02040201110E", "4": "02060A121F0202",
    "5": "1F101E0101110E", "6": "0608101E11110E", "7": "1F010204080808", "8": "0E11110E11110E",
    "9": "0E11110F01020C", ".": "00000000000C0C", ",": "000000000C0408", "-": "0000001F000000",
    "!": "04040404040004", "?": "0E110102040004", ":": "000C0C000C0C00", " ": "00000000000000",
    "'": "04040800000000",
}  # fmt: skip


def background_colour(prompt: str) -> tuple[int, int, int]:
    lowered = prompt.lower()
    found = [(lowered.find(word), rgb) for word, rgb in _COLOURS.items() if word in lowered]
    if found:
        return min(found)[1]
    digest = hashlib.sha256(prompt.encode()).digest()
    return (60 + digest[0] % 160, 60 + digest[1] % 160, 60 + digest[2] % 160)


def image_dimensions(size: str | None) -> tuple[int, int]:
    """Pixel dimensions for a ``size`` ("16:9", "1881x836", "auto"), long side LONG_SIDE."""
    ratio = 1.0
    if size and size != "auto":
        for separator in (":", "x"):
            if separator in size:
                width, _, height = size.partition(separator)
                try:
                    ratio = float(width) / float(height)
                except (ValueError, ZeroDivisionError):
                    ratio = 1.0
                break
    if ratio >= 1:
        return LONG_SIDE, max(16, round(LONG_SIDE / ratio))
    return max(16, round(LONG_SIDE * ratio)), LONG_SIDE


def render_png(input: Mapping[str, Any], index: int = 0) -> bytes:
    """A PNG for one generated image of ``input``."""
    prompt = str(input.get("prompt", ""))
    width, height = image_dimensions(input.get("size") if isinstance(input.get("size"), str) else None)
    background = background_colour(prompt)
    ink = (20, 20, 20) if sum(background) > 450 else (250, 250, 250)
    pixels = [bytearray(bytes(background) * width) for _ in range(height)]
    _draw_text(pixels, width, height, prompt + (f" #{index + 1}" if index else ""), ink)
    raw = b"".join(b"\x00" + bytes(row) for row in pixels)
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)),
            _chunk(b"iTXt", b"Description\x00\x00\x00\x00\x00" + prompt.encode("utf-8")),
            _chunk(b"IDAT", zlib.compress(raw, 6)),
            _chunk(b"IEND", b""),
        ]
    )


def render_mp4(input: Mapping[str, Any]) -> bytes:
    """A tiny placeholder MP4: a valid ``ftyp`` box and the prompt in a ``free`` box (no frames)."""
    ftyp = b"isom" + struct.pack(">I", 512) + b"isomiso2mp41"
    free = f"MindVideo emulator placeholder video: {input.get('prompt', '')}".encode()
    return _box(b"ftyp", ftyp) + _box(b"free", free)


def drawable_text(text: str) -> str:
    """``text`` as the bitmap font can draw it: upper case, accents dropped, glyph-less characters left out."""
    decomposed = unicodedata.normalize("NFKD", text.upper())
    kept = "".join(c if c in _FONT else " " for c in decomposed if not unicodedata.combining(c))
    # Punctuation that followed left-out words (a CJK clause, then ", watercolour") would lead the line.
    return re.sub(r" {2,}", " ", kept).strip().lstrip(",.:; ")


def text_lines(text: str, per_line: int) -> list[str]:
    """The drawable text in lines of at most ``per_line`` characters, broken between words (a longer word is cut)."""
    return textwrap.wrap(drawable_text(text), per_line, break_on_hyphens=False)


def _draw_text(pixels: list[bytearray], width: int, height: int, text: str, ink: tuple[int, int, int]) -> None:
    cell_w, cell_h = 6 * _SCALE, 9 * _SCALE
    margin = 8
    per_line = max(1, (width - 2 * margin) // cell_w)
    lines = text_lines(text, per_line)[: (height - 2 * margin) // cell_h]
    colour = bytes(ink)
    for line_no, line in enumerate(lines):
        for col, char in enumerate(line):
            glyph = bytes.fromhex(_FONT[char])
            x0, y0 = margin + col * cell_w, margin + line_no * cell_h
            for row, bits in enumerate(glyph):
                for bit in range(5):
                    if bits & (0x10 >> bit):
                        for dy in range(_SCALE):
                            y = y0 + row * _SCALE + dy
                            x = (x0 + bit * _SCALE) * 3
                            pixels[y][x : x + 3 * _SCALE] = colour * _SCALE


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _box(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data) + 8) + kind + data
