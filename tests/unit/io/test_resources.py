"""How big a run's blocks are: one a CPU for the input, within bounds (pipelines/io/resources.py)."""

from __future__ import annotations

from pipelines.io.resources import (
    ARROW_BYTES_PER_FILE_BYTE,
    LARGE_INPUT_BLOCK_BYTES,
    MAX_BLOCK_BYTES,
    MIN_BLOCK_BYTES,
    block_bytes,
)


def test_a_mid_sized_input_makes_one_block_a_cpu() -> None:
    size = 249_000_000  # the sample's 1 M-row CSV file
    assert block_bytes(size, 2) == int(size * ARROW_BYTES_PER_FILE_BYTE / 2)
    assert block_bytes(size, 4) == int(size * ARROW_BYTES_PER_FILE_BYTE / 4)


def test_small_inputs_are_one_block_and_large_ones_many_of_ray_datas_size() -> None:
    assert block_bytes(0, 2) == block_bytes(500_000, 2) == MIN_BLOCK_BYTES
    largest = int(MAX_BLOCK_BYTES * 2 / ARROW_BYTES_PER_FILE_BYTE)  # input bytes of two largest blocks
    assert MAX_BLOCK_BYTES - 2 <= block_bytes(largest, 2) <= MAX_BLOCK_BYTES
    assert block_bytes(largest + 100, 2) == block_bytes(4_000_000_000, 2) == LARGE_INPUT_BLOCK_BYTES
    assert block_bytes(10_000_000, 0) == int(10_000_000 * ARROW_BYTES_PER_FILE_BYTE)  # no CPU known: one
