"""Reading documents from text files (plain, gzip, both layouts) and TFDS names."""

import gzip

import pytest
import tensorflow_datasets as tfds
import tensorflow_datasets.text  # noqa: F401  (registers the wikipedia builder)
from data_fixtures import build_tiny_texts, write_corpus

from distil_jax.data.config import text_files_source, tfds_source
from distil_jax.data.text_sources import ReadCounts, iter_documents


def read(specs):
    counts = ReadCounts()
    docs = list(iter_documents(specs, counts))
    return docs, counts


def test_paragraph_layout_blank_lines_separate_documents(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("first para\n  second para  \n\n\nnext doc\n\nlast doc\n")
    docs, counts = read([text_files_source(str(path))])
    assert [d.paragraphs for d in docs] == [
        ["first para", "second para"],
        ["next doc"],
        ["last doc"],
    ]
    assert [d.index for d in docs] == [0, 1, 2]
    assert (counts.files, counts.documents, counts.undecodable) == (1, 3, 0)


def test_gzip_files_in_glob_order_and_documents_end_at_file_ends(tmp_path):
    write_corpus(str(tmp_path / "b.txt.gz"), [["b one"], ["b two"]])
    (tmp_path / "a.txt").write_text("a para without trailing newline")
    docs, counts = read([text_files_source(str(tmp_path / "*"))])
    assert [d.paragraphs for d in docs] == [
        ["a para without trailing newline"],
        ["b one"],
        ["b two"],
    ]
    assert counts.files == 2


def test_document_layout_one_document_per_line(tmp_path):
    path = tmp_path / "docs.txt"
    path.write_text("doc one\n\ndoc two\ndoc three\n")
    docs, _ = read([text_files_source(str(path), layout="documents")])
    assert [d.paragraphs for d in docs] == [["doc one"], ["doc two"], ["doc three"]]


def test_undecodable_bytes_are_replaced_and_counted(tmp_path):
    path = tmp_path / "bad.txt.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"\xef\xbb\xbfgood line\nbad \xff\xfe line\nalso bad \xc3\n")
    docs, counts = read([text_files_source(str(path))])
    assert docs[0].paragraphs == ["good line", "bad \ufffd\ufffd line", "also bad \ufffd"]
    assert counts.undecodable == 2


def test_sources_keep_their_index(tmp_path):
    (tmp_path / "a.txt").write_text("from a\n")
    (tmp_path / "b.txt").write_text("from b\n")
    docs, _ = read(
        [text_files_source(str(tmp_path / "a.txt")), text_files_source(str(tmp_path / "b.txt"))]
    )
    assert [(d.source_index, d.paragraphs) for d in docs] == [(0, ["from a"]), (1, ["from b"])]


def test_empty_glob_and_missing_path_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data.sources\[0\].glob .* matches no files"):
        read([text_files_source(str(tmp_path / "*.txt"))])
    with pytest.raises(FileNotFoundError, match="no such file"):
        read([text_files_source(str(tmp_path / "missing.txt"))])


def test_corrupt_gzip_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.txt.gz"
    path.write_bytes(b"this is not gzip")
    with pytest.raises(ValueError, match="cannot read .*broken.txt.gz"):
        read([text_files_source(str(path))])


def test_tfds_wikipedia_by_name_through_mock_data():
    # USE_CODE: the wikipedia builder's features, random records, no files needed.
    with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
        source = tfds.data_source("wikipedia/20230601.en", split="train")
        expected = [
            [p.strip() for p in source[i]["text"].splitlines() if p.strip()] for i in range(6)
        ]
        docs, counts = read([tfds_source("wikipedia/20230601.en", split="train")])
    assert [d.paragraphs for d in docs] == [p for p in expected if p]
    assert counts.documents == len(docs) > 0


def test_tfds_missing_feature_names_the_available_ones():
    with tfds.testing.mock_data(num_examples=2, policy=tfds.testing.MockPolicy.USE_CODE):
        with pytest.raises(ValueError, match=r"text_feature 'body' .* has \['text', 'title'\]"):
            read([tfds_source("wikipedia/20230601.en", text_feature="body")])


def test_tfds_dataset_on_disk_by_name(tmp_path):
    build_tiny_texts(str(tmp_path), ["para one\npara two\n", "", "only para"])
    docs, counts = read([tfds_source("tiny_texts", data_dir=str(tmp_path))])
    assert [d.paragraphs for d in docs] == [["para one", "para two"], ["only para"]]
    docs, _ = read([tfds_source("tiny_texts", data_dir=str(tmp_path), layout="documents")])
    assert [d.paragraphs for d in docs] == [["para one para two"], ["only para"]]


def test_tfds_unknown_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="TFDS dataset 'no_such_corpus' split 'train'"):
        read([tfds_source("no_such_corpus", data_dir=str(tmp_path))])
