"""Synthetic text images: digits in a 5x7 bitmap font (numpy only), the
images the CRNN of ``tools/make_torch_models.py`` is trained on and the
tests read."""
import numpy as np

# 5x7 bitmap digits (the synthetic "font" the CRNN is trained to read)
_GLYPHS = {
    "0": ["01110", "10001", "10011", "10101", "11001", "10001", "01110"],
    "1": ["00100", "01100", "00100", "00100", "00100", "00100", "01110"],
    "2": ["01110", "10001", "00001", "00010", "00100", "01000", "11111"],
    "3": ["11110", "00001", "00001", "01110", "00001", "00001", "11110"],
    "4": ["00010", "00110", "01010", "10010", "11111", "00010", "00010"],
    "5": ["11111", "10000", "11110", "00001", "00001", "10001", "01110"],
    "6": ["00110", "01000", "10000", "11110", "10001", "10001", "01110"],
    "7": ["11111", "00001", "00010", "00100", "01000", "01000", "01000"],
    "8": ["01110", "10001", "10001", "01110", "10001", "10001", "01110"],
    "9": ["01110", "10001", "10001", "01111", "00001", "00010", "01100"],
}


def render_digits(text, width, rng, scale=3, noise=0.1):
    """A 1x32xwidth float image of ``text`` (digits) in the 5x7 font scaled by
    ``scale`` (dark strokes on a light background, as scanned text), with
    random spacing, vertical offset and noise."""
    img = np.zeros((32, width), np.float32)
    x = int(rng.integers(1, 6))
    for ch in text:
        g = np.array([[int(b) for b in row] for row in _GLYPHS[ch]], np.float32)
        g = np.kron(g, np.ones((scale, scale), np.float32))
        y = int(rng.integers(1, 32 - g.shape[0]))
        if x + g.shape[1] > width:
            break
        img[y:y + g.shape[0], x:x + g.shape[1]] = np.maximum(
            img[y:y + g.shape[0], x:x + g.shape[1]], g)
        x += g.shape[1] + int(rng.integers(2, 6))
    img = 1.0 - img + noise * rng.standard_normal(img.shape).astype(np.float32)
    return img[None]
