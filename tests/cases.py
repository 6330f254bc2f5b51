"""Patterns on awkward maps, each with its brute-force description (see brute.py)."""

from vizattn.patterns import Block, Global, Grid, LocalWindow, LongDistance, Neighborhood

# (pattern, row spec, column spec, H, W)
CASES = [
    (Global(), ("global",), ("global",), 5, 7),
    (Neighborhood(3), ("na", 3, 1), ("na", 3, 1), 7, 9),
    (Neighborhood(4), ("na", 4, 1), ("na", 4, 1), 7, 6),  # even kernel
    (Neighborhood((3, 5), dilation=(2, 1)), ("na", 3, 2), ("na", 5, 1), 9, 7),  # 2 does not divide 9
    (Neighborhood(3, dilation=3), ("na", 3, 3), ("na", 3, 3), 9, 10),  # dilation at its limit on rows
    (Neighborhood((2, 3), dilation=(3, 2)), ("na", 2, 3), ("na", 3, 2), 7, 8),
    (Neighborhood(5, dilation=2), ("na", 5, 2), ("na", 5, 2), 11, 10),
    (Neighborhood(7), ("na", 7, 1), ("na", 7, 1), 7, 7),  # kernel = map
    (LocalWindow(3), ("sasa", 3), ("sasa", 3), 5, 6),
    (LocalWindow((5, 3)), ("sasa", 5), ("sasa", 3), 4, 7),  # window taller than the map
    (LocalWindow(3, padding="mask"), ("sasa", 3), ("sasa", 3), 5, 6),
    (Block(3), ("block", 3), ("block", 3), 6, 9),
    (Block((2, 3), pad=True), ("block", 2), ("block", 3), 5, 7),
    (Block(3, shift=1), ("swin", 3, 1), ("swin", 3, 1), 6, 9),  # Swin's SW-MSA
    (Block((3, 2), shift=(2, 1)), ("swin", 3, 2), ("swin", 2, 1), 9, 4),
    (Block((2, 3), shift=(1, 2), pad=True), ("swin", 2, 1), ("swin", 3, 2), 5, 7),
    (Block(4, shift=(3, 0), pad=True), ("swin", 4, 3), ("swin", 4, 0), 9, 6),  # one axis shifted
    (Grid(3), ("grid", 3), ("grid", 3), 6, 9),
    (Grid(2, pad=True), ("grid", 2), ("grid", 2), 5, 7),
    (Grid(4, pad=True), ("grid", 4), ("grid", 4), 9, 6),
    (LongDistance(2), ("lda", 2), ("lda", 2), 6, 8),
    (LongDistance(3, pad=True), ("lda", 3), ("lda", 3), 7, 8),
]
IDS = [f"{c[0]}@{c[3]}x{c[4]}" for c in CASES]

# (pattern, H, W): larger maps (up to 391 tokens), which the kernels cut into several tiles or blocks
LARGER = [
    (Neighborhood(7), 23, 17),
    (Neighborhood(7, dilation=2), 19, 21),
    (Neighborhood((5, 4), dilation=(3, 4)), 16, 17),
    (LocalWindow(7), 13, 18),
    (LocalWindow(5, padding="mask"), 12, 11),
    (Block(4, pad=True), 13, 10),
    (Block(4, shift=2), 12, 16),
    (Block((5, 3), shift=(2, 1), pad=True), 13, 10),
    (Grid(3, pad=True), 13, 10),
    (LongDistance(4, pad=True), 14, 9),
    (Global(), 6, 9),
]
