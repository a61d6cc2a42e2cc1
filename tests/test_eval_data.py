"""Task readers (local TSV quirks, TFDS), tokenised batches, SQuAD windows and decoding."""

import json
import os

import numpy as np
import pytest
from eval_fixtures import squad_json, write_glue_quirks, write_lines
from hf_fixtures import bert_teacher, save_hf, write_tokenizer

from distil_jax.data.tokenizer import load_tokenizer
from distil_jax.eval import features, readers, squad, tasks
from distil_jax.eval.metrics import squad_scores
from distil_jax.models import ModelConfig


@pytest.fixture(scope="module")
def glue_root(tmp_path_factory):
    return write_glue_quirks(str(tmp_path_factory.mktemp("glue")))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return load_tokenizer(write_tokenizer(str(tmp_path_factory.mktemp("tok"))))


def _read(task, root, split="train"):
    return readers.read_split(tasks.get_task(task), split, "local", root)


# ---------------------------------------------------------------------------- local TSV


def test_sst2_keeps_bare_quotes(glue_root):
    ex = _read("sst2", glue_root)
    # With csv's default quoting, 'it's "fine<TAB>1' would swallow the line end.
    assert ex.texts[0] == ['a "great" film ', "dull , dull , dull ", "it's \"fine"]
    assert ex.labels.tolist() == [1, 0, 1] and ex.labels.dtype == np.int64


def test_mrpc_with_bom_is_read_by_column_name(glue_root):
    with open(os.path.join(glue_root, "MRPC", "train.tsv"), "rb") as f:
        assert f.read(3) == b"\xef\xbb\xbf"  # the fixture really has the BOM
    ex = _read("mrpc", glue_root)
    assert ex.texts == (
        ['He said " hello " .', "Shares fell ."],
        ["He said hello .", "The sky is blue ."],
    )
    assert ex.labels.tolist() == [1, 0]


def test_cola_without_header_or_trailing_newline(glue_root):
    train, dev = _read("cola", glue_root), _read("cola", glue_root, "validation")
    assert train.texts[0] == ["The sailors rode the breeze .", 'John "talked himself .']
    assert train.labels.tolist() == [1, 0]
    assert dev.labels.tolist() == [0, 1]  # the last line, without "\n", is read too


def test_stsb_floats_mnli_names_and_qqp_malformed_rows(glue_root, caplog):
    sts = _read("stsb", glue_root)
    assert sts.labels.dtype == np.float32 and sts.labels.tolist() == [5.0, 0.5]
    mnli = tasks.get_task("mnli")
    matched = readers.read_split(mnli, "validation_matched", "local", glue_root)
    mismatched = readers.read_split(mnli, "validation_mismatched", "local", glue_root)
    # Class ids follow TFDS's order (entailment, neutral, contradiction).
    assert matched.labels.tolist() == [0] and mismatched.labels.tolist() == [2]
    qqp = _read("qqp", glue_root)
    assert len(qqp) == 1 and "skipped 1 malformed" in caplog.text


def test_task_names_and_groups():
    assert tasks.get_task("SST-2").name == "sst2"
    assert [t.name for t in tasks.parse_tasks("glue")] == list(tasks.GLUE_TASKS)
    assert [t.name for t in tasks.parse_tasks("sst2, mrpc,sst2")] == ["sst2", "mrpc"]
    assert len(tasks.parse_tasks("all")) == 11
    with pytest.raises(ValueError, match="unknown task 'sst3'.*known tasks: cola"):
        tasks.parse_tasks("sst2,sst3")


@pytest.mark.parametrize(
    "task,lines,message",
    [
        ("sst2", ["text\tlabel", "fine\t1"], r"missing column\(s\) \['sentence'\]"),
        ("sst2", ["sentence\tlabel", "fine\t2"], r"train.tsv:2: label '2' is outside SST-2"),
        ("sst2", ["sentence\tlabel", "fine"], r"train.tsv:2: 1 fields, expected 2"),
        ("mnli", ["sentence1\tsentence2\tgold_label", "a\tb\tmaybe"], r"'maybe' is outside MNLI"),
        ("stsb", ["sentence1\tsentence2\tscore", "a\tb\t7.5"], r"7.5 is outside \[0.0, 5.0\]"),
        ("cola", ["gj04\t1\tThe end ."], r"train.tsv:1: 3 fields, expected 4"),
        ("sst2", ["sentence\tlabel"], "holds no examples"),
    ],
)
def test_bad_files_give_clear_errors(tmp_path, task, lines, message):
    spec = tasks.get_task(task)
    write_lines(str(tmp_path / spec.local.directory / "train.tsv"), lines)
    with pytest.raises(ValueError, match=message):
        _read(task, str(tmp_path))


def test_missing_file_names_the_expected_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"RTE/dev.tsv.*glue_data layout"):
        _read("rte", str(tmp_path), "validation")


def test_imdb_local_folder(tmp_path):
    folder = str(tmp_path / "reviews")
    write_lines(f"{folder}/train.tsv", ["sentence\tlabel", 'a "fun" movie\tpos', "boring\t0"])
    ex = readers.read_split(tasks.get_task("imdb"), "train", "local", "", task_dir=folder)
    assert ex.texts[0] == ['a "fun" movie', "boring"] and ex.labels.tolist() == [1, 0]


# ---------------------------------------------------------------------------- TFDS


def test_tfds_data_sources_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
        sst2 = readers.read_split(tasks.get_task("sst2"), "validation", "tfds", "")
        mnli = readers.read_split(tasks.get_task("mnli"), "validation_mismatched", "tfds", "")
        stsb = readers.read_split(tasks.get_task("stsb"), "train", "tfds", "")
        imdb = readers.read_split(tasks.get_task("imdb"), "test", "tfds", "")
        squad_ex = squad.read_squad_tfds("validation")
    assert len(sst2) == 6 and isinstance(sst2.texts[0][0], str)
    assert set(sst2.labels.tolist()) <= {0, 1}
    assert len(mnli.texts) == 2 and set(mnli.labels.tolist()) <= {0, 1, 2}
    assert stsb.labels.dtype == np.float32
    assert len(imdb) == 6
    assert len(squad_ex) == 6 and squad_ex[0].answers


def test_tfds_missing_dataset_says_how_to_get_it(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(FileNotFoundError, match="array_record.*data_source='local'"):
        readers.read_split(tasks.get_task("rte"), "train", "tfds", str(tmp_path))


# ---------------------------------------------------------------------------- features


def test_encode_pairs_and_bucketed_batches(tokenizer, glue_root):
    ex = _read("mrpc", glue_root)
    enc = features.encode_texts(tokenizer, ex, max_length=16)
    ids, types = enc.arrays["input_ids"], enc.arrays["token_type_ids"]
    assert ids.shape == (2, 16) and ids[0, 0] == tokenizer.cls_token_id
    n = enc.lengths[1]
    assert ids[1, n - 1] == tokenizer.sep_token_id and np.all(ids[1, n:] == 0)
    assert types[1, 0] == 0 and types[1, n - 1] == 1  # second segment has type 1
    buckets = features.bucket_lengths(16, "8")
    assert buckets == [8, 16]
    batches = list(features.batches(enc, batch_size=4, buckets=buckets))
    assert len(batches) == 1
    b = batches[0]
    assert b["input_ids"].shape == (4, 16 if enc.lengths.max() > 8 else 8)
    assert b["weight"].tolist() == [1, 1, 0, 0] and b["labels"].shape == (4,)


def test_batches_are_cut_to_the_smallest_bucket(tokenizer):
    ex = readers.TextExamples((["cat", "the dog sat on the mat"],), np.array([0, 1]), "x")
    enc = features.encode_texts(tokenizer, ex, max_length=32)
    (short,) = features.batches(enc, 1, [4, 8, 32], order=np.array([0]))
    (long,) = features.batches(enc, 1, [4, 8, 32], order=np.array([1]))
    assert short["input_ids"].shape == (1, 4) and long["input_ids"].shape == (1, 8)


def test_vocabulary_mismatch_is_refused(tmp_path):
    small = save_hf(bert_teacher(vocab_size=30), str(tmp_path / "small"), with_tokenizer=False)
    tok_dir = write_tokenizer(str(tmp_path / "tok"))
    cfg = ModelConfig.from_hf_file(small)
    with pytest.raises(ValueError, match="embeds only 30"):
        features.model_tokenizer(small, tok_dir, cfg)
    model = save_hf(bert_teacher(), str(tmp_path / "model"))  # with its own tokenizer
    other = write_tokenizer(str(tmp_path / "other"), extra_tokens=19)
    with open(os.path.join(other, "vocab.txt"), "a") as f:
        f.write("zebra\n")  # same size, another token
    with pytest.raises(ValueError, match="differs from the one stored with the model"):
        features.model_tokenizer(model, other, ModelConfig.from_hf_file(model))
    with pytest.raises(FileNotFoundError, match="set config.tokenizer"):
        features.model_tokenizer(small, "", cfg)


# ---------------------------------------------------------------------------- SQuAD


def test_squad_windows_positions_and_decoding(tmp_path, tokenizer):
    examples = squad.read_squad_json(squad_json(str(tmp_path / "dev-v1.1.json")))
    assert [e.qid for e in examples] == ["q0", "q1", "q2"]
    # 16 tokens and a stride of 4 force several windows on the longer context.
    feats = squad.featurize(tokenizer, examples, max_length=16, doc_stride=4, max_query_length=4)
    arrays = feats.encoded.arrays
    # Context 2 has 17 tokens; with a 3-token question a window holds 16 - 3 - 3 = 10,
    # so windows start at tokens 0, 4 and 8 (8 + 10 >= 17). Context 1 fits in one.
    assert np.bincount(feats.example_index).tolist() == [1, 3, 3]
    assert arrays["input_ids"].shape[1] == 16
    # Every window whose context holds the answer points at exactly its tokens.
    found = set()
    for f, ex in enumerate(feats.example_index):
        s, e = arrays["start_positions"][f], arrays["end_positions"][f]
        if s == 0:
            continue
        context = examples[ex].context
        span = context[feats.offsets[f, s, 0] : feats.offsets[f, e, 1]]
        assert span == examples[ex].answers[0]
        found.add(int(ex))
    assert found == {0, 1, 2}
    # Logits peaked on the gold positions decode to the gold answers (EM 100).
    start = np.where(np.arange(16)[None] == arrays["start_positions"][:, None], 5.0, 0.0)
    end = np.where(np.arange(16)[None] == arrays["end_positions"][:, None], 5.0, 0.0)
    preds = squad.decode(examples, feats, start, end, n_best=3, max_answer_length=10)
    assert squad_scores(preds, squad.gold_answers(examples)) == {"exact_match": 1.0, "f1": 1.0}
    # An answer longer than max_answer_length is never proposed.
    short = squad.decode(examples, feats, start, end, n_best=3, max_answer_length=1)
    assert short["q2"] != "by the red mat"


def test_squad_bad_json(tmp_path):
    path = tmp_path / "train-v1.1.json"
    path.write_text(json.dumps({"version": "1.1"}))
    with pytest.raises(ValueError, match="not a SQuAD JSON file"):
        squad.read_squad_json(str(path))
    with pytest.raises(FileNotFoundError, match="official SQuAD"):
        squad.read_squad_json(str(tmp_path / "nope.json"))
