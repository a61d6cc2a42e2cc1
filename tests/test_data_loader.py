"""Loaders: per-process parts, bucketing, exact resume, epochs, weights, evaluation."""

import collections
import itertools
import json

import numpy as np
import pytest
from data_fixtures import random_documents, tiny_data_config, write_corpus, write_tokenizer_dir

from distil_jax.data import batch_plan, make_eval_loader, make_train_loader, prepare
from distil_jax.data.config import text_files_source
from distil_jax.data.prepared import open_split

BUCKETS = (8, 12, 16)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("loader")
    tokenizer_dir = write_tokenizer_dir(str(root / "tokenizer"))
    write_corpus(str(root / "a.txt"), random_documents(3, 80, max_words=12))
    write_corpus(str(root / "b.txt"), random_documents(4, 40, max_words=12))
    cfg = tiny_data_config(str(root / "*.txt"), str(root / "one_source"), held_out_fraction=0.25)
    two = tiny_data_config("unused", str(root / "two_sources"))
    two.sources = [text_files_source(str(root / "a.txt")), text_files_source(str(root / "b.txt"))]
    return dict(
        cfg=cfg,
        dir=prepare(cfg, tokenizer_dir),
        two_cfg=two,
        two_dir=prepare(two, tokenizer_dir),
    )


def records(prepared_dir, split="train"):
    data = open_split(prepared_dir, split)
    return [data.source[i]["input_ids"].astype(np.int32) for i in range(len(data))], data


def take(loader, n):
    return list(itertools.islice(loader, n))


def loaders(prepared, process_count, global_batch=8, **kw):
    return [
        make_train_loader(
            prepared["cfg"],
            prepared["dir"],
            global_batch_size=global_batch,
            process_index=p,
            process_count=process_count,
            seed=7,
            **kw,
        )
        for p in range(process_count)
    ]


def test_process_parts_are_disjoint_complete_and_bucketed(prepared):
    seqs, data = records(prepared["dir"])
    buckets = batch_plan.bucket_ids(data.lengths, BUCKETS)
    plan = batch_plan.train_epoch(buckets, data.source_ids, [1.0], BUCKETS, 8, 7, epoch=0)
    parts = loaders(prepared, process_count=4, num_epochs=1)
    seen = []
    batches_per_process = [list(part) for part in parts]
    assert {len(b) for b in batches_per_process} == {len(plan)} == {parts[0].steps_per_epoch}
    for step in range(len(plan)):
        step_rows = []
        for p, batches in enumerate(batches_per_process):
            batch = batches[step]
            rows = batch_plan.process_rows(plan.rows[step], p, 4)
            # Every process pads to the same bucket: the global batch's.
            assert batch["input_ids"].shape == (2, plan.lengths[step])
            for row, index in enumerate(rows):
                n = int(batch["attention_mask"][row].sum())
                # Never truncated: the real tokens are the whole record.
                np.testing.assert_array_equal(batch["input_ids"][row, :n], seqs[index])
                assert (batch["input_ids"][row, n:] == 0).all()
                assert (batch["attention_mask"][row, n:] == 0).all()
            step_rows.extend(rows.tolist())
        assert step_rows == plan.rows[step].tolist()  # the parts make the global batch
        longest = max(len(seqs[i]) for i in step_rows)
        assert plan.lengths[step] == min(b for b in BUCKETS if b >= longest)
        seen.extend(step_rows)
    assert len(seen) == len(set(seen))  # disjoint
    assert len(seen) == len(seqs) - len(seqs) % 8  # complete but the last partial batch


def test_batches_are_mostly_length_homogeneous(prepared):
    (loader,) = loaders(prepared, process_count=1, num_epochs=1)
    shapes = collections.Counter(b["input_ids"].shape[1] for b in loader)
    assert set(shapes) <= set(BUCKETS) and len(shapes) > 1
    _, data = records(prepared["dir"])
    assert shapes[8] >= (data.lengths <= 8).sum() // 8 - 1  # short ones batch together


def test_resume_gives_exactly_the_uninterrupted_batches(prepared):
    (straight,) = loaders(prepared, process_count=1, global_batch=16)
    per_epoch = straight.steps_per_epoch
    total = per_epoch + 5  # crosses an epoch boundary
    expected = take(straight, total)
    (first,) = loaders(prepared, process_count=1, global_batch=16)
    take(first, per_epoch - 2)
    state = json.loads(json.dumps(first.get_state()))  # as saved with a checkpoint
    (resumed,) = loaders(prepared, process_count=1, global_batch=16)
    resumed.set_state(state)
    assert resumed.epoch == 0
    rest = take(resumed, total - (per_epoch - 2))
    assert resumed.epoch == 1
    for a, b in zip(expected[per_epoch - 2 :], rest, strict=True):
        np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
        np.testing.assert_array_equal(a["attention_mask"], b["attention_mask"])


def test_resume_with_another_process_count_keeps_the_global_batches(prepared):
    (single,) = loaders(prepared, process_count=1)
    take(single, 3)
    state = single.get_state()
    expected = take(single, 4)
    halves = loaders(prepared, process_count=2)
    for half in halves:
        half.set_state(state)
    got = [take(half, 4) for half in halves]
    for step in range(4):
        joined = np.concatenate([got[0][step]["input_ids"], got[1][step]["input_ids"]])
        np.testing.assert_array_equal(joined, expected[step]["input_ids"])


def test_state_of_another_plan_is_refused(prepared):
    (loader,) = loaders(prepared, process_count=1)
    state = loader.get_state()
    other = make_train_loader(
        prepared["cfg"],
        prepared["dir"],
        global_batch_size=8,
        process_index=0,
        process_count=1,
        seed=8,
    )
    with pytest.raises(ValueError, match="another batch plan .*seed"):
        other.set_state(state)


def test_epochs_are_counted_and_reshuffled(prepared):
    (loader,) = loaders(prepared, process_count=1, num_epochs=2)
    per_epoch = loader.steps_per_epoch
    batches = list(loader)
    assert len(batches) == 2 * per_epoch and loader.epoch == 2
    first = [b["input_ids"].tobytes() for b in batches[:per_epoch]]
    second = [b["input_ids"].tobytes() for b in batches[per_epoch:]]
    assert first != second
    (again,) = loaders(prepared, process_count=1, num_epochs=1)
    assert [b["input_ids"].tobytes() for b in again] == first  # same seed, same batches


def test_forever_loader_keeps_going(prepared):
    (loader,) = loaders(prepared, process_count=1, global_batch=64)
    take(loader, 3 * loader.steps_per_epoch + 1)
    assert loader.epoch == 3 and loader.step == 3 * loader.steps_per_epoch + 1


def test_bad_batch_sizes_and_process_indices(prepared):
    cfg, d = prepared["cfg"], prepared["dir"]
    with pytest.raises(
        ValueError, match="global batch size 10 is not divisible by the process count 4"
    ):
        make_train_loader(cfg, d, global_batch_size=10, process_index=0, process_count=4, seed=0)
    with pytest.raises(ValueError, match="process_index 2 not in"):
        make_train_loader(cfg, d, global_batch_size=8, process_index=2, process_count=2, seed=0)
    with pytest.raises(ValueError, match="exceeds the .* sequences of one epoch"):
        make_train_loader(cfg, d, global_batch_size=4096, process_index=0, process_count=1, seed=0)


def test_buckets_shorter_than_the_prepared_sequences_are_refused(prepared):
    cfg = tiny_data_config(
        prepared["cfg"].sources[0]["glob"], prepared["dir"], max_len=12, bucket_lengths=(8, 12)
    )
    cfg.held_out_fraction = 0.25
    with pytest.raises(ValueError, match="exceeds the largest bucket 12"):
        make_train_loader(
            cfg, prepared["dir"], global_batch_size=8, process_index=0, process_count=1, seed=0
        )


def test_source_weights_repeat_and_subsample(prepared):
    _, data = records(prepared["two_dir"])
    buckets = batch_plan.bucket_ids(data.lengths, BUCKETS)
    n0, n1 = (data.source_ids == 0).sum(), (data.source_ids == 1).sum()
    subsets = []
    for epoch in range(2):
        plan = batch_plan.train_epoch(buckets, data.source_ids, [2.0, 0.5], BUCKETS, 1, 0, epoch)
        counts = np.bincount(plan.rows.ravel(), minlength=len(data))
        assert (counts[data.source_ids == 0] == 2).all()
        drawn = np.flatnonzero((counts == 1) & (data.source_ids == 1))
        assert len(drawn) == round(0.5 * n1) and counts[data.source_ids == 1].max() == 1
        subsets.append(set(drawn.tolist()))
    assert subsets[0] != subsets[1]  # a fresh subset every epoch
    cfg = prepared["two_cfg"].copy_and_resolve_references()
    cfg.sources = [dict(s, weight=w) for s, w in zip(cfg.sources, (2.0, 0.5), strict=True)]
    loader = make_train_loader(
        cfg, prepared["two_dir"], global_batch_size=4, process_index=0, process_count=1, seed=0
    )
    assert loader.steps_per_epoch == (2 * n0 + round(0.5 * n1)) // 4


def test_changed_sources_are_refused(prepared):
    cfg = prepared["two_cfg"].copy_and_resolve_references()
    cfg.sources = cfg.sources[:1]
    with pytest.raises(ValueError, match="data.sources differ from the sources prepared"):
        make_train_loader(
            cfg, prepared["two_dir"], global_batch_size=4, process_index=0, process_count=1, seed=0
        )


def test_eval_loader_yields_each_sequence_once(prepared):
    seqs, _ = records(prepared["dir"], "validation")
    parts = [
        make_eval_loader(
            prepared["cfg"], prepared["dir"], global_batch_size=6, process_index=p, process_count=3
        )
        for p in range(3)
    ]
    batches = [list(part) for part in parts]
    assert len({len(b) for b in batches}) == 1 and len(batches[0]) == -(-len(seqs) // 6)
    got = []
    for step in range(len(batches[0])):
        assert len({b[step]["input_ids"].shape for b in batches}) == 1
        for p in range(3):
            for ids, mask in zip(
                batches[p][step]["input_ids"], batches[p][step]["attention_mask"], strict=True
            ):
                if mask.any():
                    got.append(tuple(ids[: mask.sum()].tolist()))
                else:
                    assert (ids == 0).all()  # an all-pad row completing the last batch
    assert collections.Counter(got) == collections.Counter(tuple(s.tolist()) for s in seqs)
