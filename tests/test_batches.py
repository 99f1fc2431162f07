"""The training batch schedule: resumable order, full epochs, rows of similar length together."""

import random
from types import SimpleNamespace

import pytest

from training.batches import IGNORE, BatchSchedule, Encoded
from training.data.schema import DataError, Example
from training.models.tiny import byte_tokenizer
from training.run_setup import build_schedule


def _items(n: int, seed: int = 0) -> list[Encoded]:
    rng = random.Random(seed)
    # Short and long replies mixed, as with fixed answers next to upper-cased essays.
    lengths = [rng.choice([rng.randint(40, 60), rng.randint(100, 180)]) for _ in range(n)]
    return [Encoded([i] * n_tok, [IGNORE] + [i] * (n_tok - 1)) for i, n_tok in enumerate(lengths)]


def _rows(batch) -> list[int]:
    return batch["input_ids"][:, 0].tolist()


def test_each_epoch_covers_every_row_once():
    items = _items(203)
    schedule = BatchSchedule(items, batch_size=8, pad_id=-1, seed=3, group_batches=16)
    assert schedule.per_epoch == 26
    for epoch in range(2):
        seen = [r for i in range(26) for r in _rows(schedule.batch(epoch * 26 + i))]
        assert sorted(seen) == list(range(203))


def test_batch_is_a_function_of_seed_and_step():
    items = _items(100)
    a = BatchSchedule(items, 8, -1, seed=1, group_batches=16)
    order = [_rows(a.batch(s)) for s in range(40)]
    # a resumed run jumps straight to step 30
    b = BatchSchedule(items, 8, -1, seed=1, group_batches=16)
    assert [_rows(b.batch(s)) for s in (30, 5, 39)] == [order[30], order[5], order[39]]
    other_seed = BatchSchedule(items, 8, -1, seed=2, group_batches=16)
    assert [_rows(other_seed.batch(s)) for s in range(40)] != order


def test_grouping_by_length_cuts_padding():
    items = _items(256)

    def padded_tokens(group_batches: int) -> int:
        schedule = BatchSchedule(items, 8, -1, seed=0, group_batches=group_batches)
        return sum(schedule.batch(s)["input_ids"].numel() for s in range(schedule.per_epoch))

    real = sum(len(e.input_ids) for e in items)
    assert padded_tokens(16) < 0.8 * padded_tokens(0)
    assert padded_tokens(16) < 1.15 * real


def test_without_grouping_batches_are_slices_of_the_epoch_shuffle():
    import torch

    items = _items(50)
    schedule = BatchSchedule(items, 8, -1, seed=4)
    order = torch.randperm(50, generator=torch.Generator().manual_seed(4 + 1)).tolist()
    assert _rows(schedule.batch(7 + 2)) == order[16:24]  # epoch 1 (7 batches per epoch), batch 2


def test_rows_whose_prompt_fills_max_len_are_left_out(capsys):
    """Such a row has no reply token to learn; a batch of them would have a NaN loss."""
    tok = byte_tokenizer()
    short = Example(({"role": "user", "content": "hi"},), "yo", "b")
    long = Example(({"role": "user", "content": "x" * 200},), "yo", "b")
    cfg = SimpleNamespace(max_len=64, batch_size=2, seed=0, group_by_length=False)
    schedule = build_schedule([short, long, short], tok, cfg)
    assert len(schedule.items) == 2
    assert "1 of 3 rows left out: their prompt fills --max-len 64" in capsys.readouterr().err
    batch = schedule.batch(0)
    assert (batch["labels"][:, 1:] != IGNORE).any(dim=1).all()
    with pytest.raises(DataError, match="every prompt fills --max-len 64"):
        build_schedule([long], tok, cfg)
