"""prepare(): shards equal the tokenizer's output, exact counts, reuse and refusals."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from data_fixtures import (
    random_documents,
    tiny_data_config,
    vocab_size,
    write_corpus,
    write_tokenizer_dir,
)
from transformers import AutoTokenizer

from distil_jax.data import load_summary, load_token_counts, prepare
from distil_jax.data.preparation import is_held_out
from distil_jax.data.prepared import COMPLETE, open_split
from distil_jax.data.sequences import RuleCounts, SequenceRules, build_sequences
from distil_jax.data.tokenizer import check_matches_teacher, describe, load_tokenizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    # Its tokenizer.json truncates and pads to 6 tokens, like the real one does to 128.
    tokenizer_dir = write_tokenizer_dir(str(root / "tokenizer"), truncate_at=6)
    docs_a, docs_b = random_documents(0, 30), random_documents(1, 30)
    write_corpus(str(root / "text" / "a.txt"), docs_a)
    write_corpus(str(root / "text" / "b.txt.gz"), docs_b)
    return dict(
        root=root,
        tokenizer_dir=tokenizer_dir,
        documents=docs_a + docs_b,
        glob=str(root / "text" / "*"),
    )


@pytest.fixture(scope="module")
def prepared(corpus):
    cfg = tiny_data_config(corpus["glob"], str(corpus["root"] / "prepared"))
    return cfg, prepare(cfg, corpus["tokenizer_dir"])


def expected_sequences(corpus, cfg, documents=None):
    """What the tokenizer (with its own [CLS]/[SEP]) gives, under the reference rules."""
    tokenizer = AutoTokenizer.from_pretrained(corpus["tokenizer_dir"])
    rules = SequenceRules(
        cls_id=tokenizer.cls_token_id,
        sep_id=tokenizer.sep_token_id,
        unk_id=tokenizer.unk_token_id,
        max_len=cfg.max_len,
        min_len=cfg.min_len,
        max_unk_fraction=cfg.max_unk_fraction,
    )
    sequences = []
    for doc in corpus["documents"] if documents is None else documents:
        for paragraph in doc:
            ids = tokenizer(paragraph)["input_ids"]
            assert ids[0] == rules.cls_id and ids[-1] == rules.sep_id
            sequences += [s.tolist() for s in build_sequences(ids[1:-1], rules, RuleCounts())]
    return sequences


def read_split(prepared_dir, split="train"):
    data = open_split(prepared_dir, split)
    return [data.source[i]["input_ids"].tolist() for i in range(len(data))], data


def test_shards_read_back_equal_the_tokenizer_output(corpus, prepared):
    cfg, prepared_dir = prepared
    records, data = read_split(prepared_dir)
    assert records == expected_sequences(corpus, cfg)
    assert data.source[0]["input_ids"].dtype == np.uint16
    assert data.lengths.tolist() == [len(r) for r in records]
    assert set(data.source_ids.tolist()) == {0}


def test_token_counts_are_exact(corpus, prepared):
    cfg, prepared_dir = prepared
    flat = np.concatenate(expected_sequences(corpus, cfg))
    counts = load_token_counts(prepared_dir)
    assert counts.dtype == np.int64 and counts.shape == (vocab_size(),)
    np.testing.assert_array_equal(counts, np.bincount(flat, minlength=vocab_size()))


def test_summary(corpus, prepared):
    cfg, prepared_dir = prepared
    summary = load_summary(prepared_dir)
    sequences = expected_sequences(corpus, cfg)
    assert summary["vocab_size"] == vocab_size()
    assert summary["num_sequences"] == len(sequences)
    assert summary["num_tokens"] == sum(map(len, sequences))
    assert summary["documents"] == len(corpus["documents"])
    assert summary["special_token_ids"] == dict(pad=0, unk=1, cls=2, sep=3, mask=4)
    hist = summary["length_histogram"]
    assert hist["upper_edges"] == [8, 16] and sum(hist["counts"]) == len(sequences)
    assert hist["counts"][0] == sum(len(s) <= 8 for s in sequences)
    assert summary["split_paragraphs"] > 0 and summary["dropped_short"] > 0
    assert (
        summary["tokenizer_fingerprint"]
        == describe(load_tokenizer(corpus["tokenizer_dir"]), corpus["tokenizer_dir"]).fingerprint
    )
    assert list(summary["splits"]) == ["train"]  # no held-out split by default


def test_readable_by_name_with_tfds_data_source(prepared):
    _, prepared_dir = prepared
    source = tfds.data_source("distil_sequences", split="train", data_dir=prepared_dir)
    records, _ = read_split(prepared_dir)
    assert len(source) == len(records)
    assert source[3]["input_ids"].tolist() == records[3]


def test_finished_preparation_is_reused(corpus, prepared):
    cfg, prepared_dir = prepared
    marker = os.path.join(prepared_dir, COMPLETE)
    before = os.stat(marker).st_mtime_ns
    cfg2 = tiny_data_config(corpus["glob"], prepared_dir, loader_threads=1)  # loader-only change
    assert prepare(cfg2, corpus["tokenizer_dir"]) == prepared_dir
    assert os.stat(marker).st_mtime_ns == before


def test_another_tokenizer_is_refused(corpus, prepared, tmp_path):
    cfg, prepared_dir = prepared
    other = write_tokenizer_dir(str(tmp_path / "other"), words=["the", "cat", "dog"])
    with pytest.raises(ValueError, match="prepared with another tokenizer"):
        prepare(cfg, other)


def test_other_settings_are_refused(corpus, prepared):
    _, prepared_dir = prepared
    cfg = tiny_data_config(corpus["glob"], prepared_dir, min_len=5)
    with pytest.raises(ValueError, match="other settings .*min_len"):
        prepare(cfg, corpus["tokenizer_dir"])


def test_unfinished_preparation_is_redone(corpus, prepared, tmp_path):
    cfg, prepared_dir = prepared
    copy = str(tmp_path / "copy")
    shutil.copytree(prepared_dir, copy)
    os.remove(os.path.join(copy, COMPLETE))  # as if interrupted before the end
    os.remove(os.path.join(copy, "summary.json"))
    cfg2 = tiny_data_config(corpus["glob"], copy)
    prepare(cfg2, corpus["tokenizer_dir"])
    assert read_split(copy)[0] == read_split(prepared_dir)[0]


def test_foreign_directory_is_not_overwritten(corpus, tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    cfg = tiny_data_config(corpus["glob"], str(tmp_path))
    with pytest.raises(ValueError, match="not empty and holds no preparation.json"):
        prepare(cfg, corpus["tokenizer_dir"])
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_empty_corpus_is_a_clear_error(corpus, tmp_path):
    (tmp_path / "blank.txt").write_text("\n\n   \nthe cat\n\n")  # one 4-token paragraph
    cfg = tiny_data_config(str(tmp_path / "blank.txt"), str(tmp_path / "out"), min_len=5)
    with pytest.raises(
        ValueError, match="empty corpus: no training sequence left from 1 documents"
    ):
        prepare(cfg, corpus["tokenizer_dir"])


def test_undecodable_bytes_are_counted_in_the_summary(corpus, tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"the cat sat on the \xff mat\n")
    cfg = tiny_data_config(str(tmp_path / "bad.txt"), str(tmp_path / "out"))
    summary = load_summary(prepare(cfg, corpus["tokenizer_dir"]))
    assert summary["undecodable"] == 1 and summary["num_sequences"] == 1


def test_held_out_documents_form_the_validation_split(corpus, tmp_path):
    cfg = tiny_data_config(corpus["glob"], str(tmp_path / "out"), held_out_fraction=0.3)
    prepared_dir = prepare(cfg, corpus["tokenizer_dir"])
    # Document indices restart per source, and both files are one source (index 0).
    held = [is_held_out(0, i, 0.3) for i in range(len(corpus["documents"]))]
    train_docs = [d for d, h in zip(corpus["documents"], held, strict=True) if not h]
    valid_docs = [d for d, h in zip(corpus["documents"], held, strict=True) if h]
    assert 0 < len(valid_docs) < len(train_docs)
    assert read_split(prepared_dir, "train")[0] == expected_sequences(corpus, cfg, train_docs)
    assert read_split(prepared_dir, "validation")[0] == expected_sequences(corpus, cfg, valid_docs)
    flat = np.concatenate(expected_sequences(corpus, cfg, train_docs))
    np.testing.assert_array_equal(
        load_token_counts(prepared_dir), np.bincount(flat, minlength=vocab_size())
    )
    assert load_summary(prepared_dir)["splits"]["validation"]["documents"] == len(valid_docs)


def test_worker_processes_give_the_same_shards(corpus, prepared, tmp_path):
    cfg, prepared_dir = prepared
    cfg2 = tiny_data_config(corpus["glob"], str(tmp_path / "out"), num_workers=2)
    out = prepare(cfg2, corpus["tokenizer_dir"])
    assert read_split(out)[0] == read_split(prepared_dir)[0]
    np.testing.assert_array_equal(load_token_counts(out), load_token_counts(prepared_dir))


def test_tokenizer_must_match_the_teacher(corpus, tmp_path):
    info = describe(load_tokenizer(corpus["tokenizer_dir"]), corpus["tokenizer_dir"])
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "config.json").write_text(json.dumps({"vocab_size": info.vocab_size}))
    check_matches_teacher(info, str(teacher))  # same size, no tokenizer of its own: fine
    (teacher / "config.json").write_text(json.dumps({"vocab_size": 30522}))
    with pytest.raises(ValueError, match="has 46 tokens but the teacher .* vocab_size 30522"):
        check_matches_teacher(info, str(teacher))
    (teacher / "config.json").write_text(json.dumps({"vocab_size": info.vocab_size}))
    write_tokenizer_dir(str(teacher), words=list(reversed(__import__("data_fixtures").WORDS)))
    with pytest.raises(ValueError, match="differs from the teacher's own tokenizer"):
        check_matches_teacher(info, str(teacher))


def test_command_line(corpus, tmp_path):
    config_file = tmp_path / "cfg.py"
    config_file.write_text(
        "import sys\n"
        f"sys.path.insert(0, {os.path.join(REPO, 'tests')!r})\n"
        "import ml_collections\n"
        "from data_fixtures import tiny_data_config\n"
        "def get_config():\n"
        "    config = ml_collections.ConfigDict()\n"
        f"    config.teacher = {corpus['tokenizer_dir']!r}\n"
        f"    config.data = tiny_data_config({corpus['glob']!r}, {str(tmp_path / 'out')!r})\n"
        "    return config\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "distil_jax.prepare_data", f"--config={config_file}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": REPO},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = load_summary(str(tmp_path / "out"))
    assert f"{summary['num_sequences']} sequences" in result.stdout
