"""Sequence rules against hand-computed expectations (ids: [UNK]=1 [CLS]=2 [SEP]=3)."""

import numpy as np
import pytest

from distil_jax.data.sequences import RuleCounts, SequenceRules, build_sequences, split_long

RULES = SequenceRules(cls_id=2, sep_id=3, unk_id=1, max_len=8, min_len=4, max_unk_fraction=0.5)


def build(ids, rules=RULES):
    counts = RuleCounts()
    return [s.tolist() for s in build_sequences(ids, rules, counts)], counts


def test_short_paragraph_is_wrapped_in_specials():
    seqs, counts = build([5, 6, 7])
    assert seqs == [[2, 5, 6, 7, 3]]
    assert counts == RuleCounts(paragraphs=1)


def test_min_len_keeps_equal_and_drops_shorter():
    assert build([5, 6])[0] == [[2, 5, 6, 3]]  # 4 tokens = min_len: kept
    seqs, counts = build([5])  # 3 tokens: dropped
    assert seqs == [] and counts.dropped_short == 1


def test_exactly_max_len_is_not_split():
    ids = [10, 11, 12, 13, 14, 15]  # wrapped: 8 tokens = max_len
    assert build(ids)[0] == [[2, 10, 11, 12, 13, 14, 15, 3]]


def test_long_paragraph_split_like_the_reference():
    # Wrapped: [2, 10..19, 3] (12 tokens) cut into max_len-2 = 6 token chunks:
    # [2,10,11,12,13,14] gets a [SEP]; [15,16,17,18,19,3] gets a [CLS].
    seqs, counts = build(list(range(10, 20)))
    assert seqs == [[2, 10, 11, 12, 13, 14, 3], [2, 15, 16, 17, 18, 19, 3]]
    assert counts.split_paragraphs == 1


def test_middle_chunks_get_both_specials_and_a_lone_sep_is_dropped():
    # Wrapped: [2, 10..20, 3] (13 tokens): chunks [2,10..14], [15..20], [3].
    seqs, counts = build(list(range(10, 21)))
    assert seqs == [[2, 10, 11, 12, 13, 14, 3], [2, 15, 16, 17, 18, 19, 20, 3]]
    assert len(seqs[1]) == RULES.max_len
    assert counts.dropped_short == 1  # the last chunk became [2, 3]


def test_unknown_share_at_half_is_dropped_below_is_kept():
    assert build([1, 1, 5, 6])[0] == [[2, 1, 1, 5, 6, 3]]  # 2/6 unknown: kept
    seqs, counts = build([1, 1, 1, 5])  # 3/6 unknown: dropped
    assert seqs == [] and counts.dropped_unk == 1


def test_rules_apply_per_chunk():
    # Chunks of [2, 5,5,5,5,5, 1,1,1,1,1,1, 3]: [2,5,5,5,5,5]+[3] kept,
    # [1,1,1,1,1,1]+specials: 6/8 unknown, dropped; [3] -> [2,3] too short.
    seqs, counts = build([5] * 5 + [1] * 6)
    assert seqs == [[2, 5, 5, 5, 5, 5, 3]]
    assert (counts.dropped_unk, counts.dropped_short) == (1, 1)


def test_split_long_never_exceeds_max_len():
    rng = np.random.default_rng(0)
    for n in range(1, 60):
        seq = np.concatenate([[2], rng.integers(5, 50, size=n), [3]])
        chunks = split_long(seq, RULES)
        assert all(len(c) <= RULES.max_len for c in chunks)
        assert all(c[0] == 2 and c[-1] == 3 for c in chunks)
        inner = np.concatenate([c[1:-1] for c in chunks])
        assert inner.tolist() == seq[1:-1].tolist()  # nothing lost, nothing repeated


@pytest.mark.parametrize("n_ids,kept", [(9, 0), (10, 1)])
def test_reference_defaults_drop_eleven_keep_twelve(n_ids, kept):
    rules = SequenceRules(cls_id=2, sep_id=3, unk_id=1)  # max_len 512, min_len 12
    assert len(build(list(range(10, 10 + n_ids)), rules)[0]) == kept
