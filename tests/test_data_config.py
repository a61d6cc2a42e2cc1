"""The data section: defaults are valid, inconsistent values name their field."""

import pytest

from distil_jax.data.config import data_config, text_files_source, tfds_source, validate
from distil_jax.data.loader import per_process_batch_size


def test_defaults_are_valid_and_follow_the_reference():
    cfg = data_config()
    validate(cfg)
    assert (cfg.max_len, cfg.min_len, cfg.max_unk_fraction) == (512, 12, 0.5)
    assert tuple(cfg.bucket_lengths) == (128, 256, 512)
    assert cfg.tokenizer_dir is None


def test_tokenizer_dir_can_be_set_from_a_string_override():
    cfg = data_config()
    cfg.tokenizer_dir = "/some/dir"  # a placeholder(str): overridable on the command line
    assert cfg.tokenizer_dir == "/some/dir"


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("bucket_lengths", (256, 128, 512), "data.bucket_lengths must be strictly ascending"),
        ("bucket_lengths", (128, 256), "data.bucket_lengths must end with data.max_len"),
        ("bucket_lengths", (), "data.bucket_lengths"),
        ("min_len", 600, "data.min_len"),
        ("max_len", 2, "data.max_len"),
        ("max_unk_fraction", 0.0, "data.max_unk_fraction"),
        ("held_out_fraction", 1.0, "data.held_out_fraction"),
        ("num_workers", -1, "data.num_workers"),
        ("loader_threads", 0, "data.loader_threads"),
        ("prepared_dir", "", "data.prepared_dir"),
        ("sources", [], "data.sources is empty"),
    ],
)
def test_inconsistent_values_name_the_field(field, value, message):
    cfg = data_config()
    cfg[field] = value
    with pytest.raises(ValueError, match=message):
        validate(cfg)


@pytest.mark.parametrize(
    "source,message",
    [
        (dict(kind="web", glob="x"), r"data.sources\[0\].kind"),
        (dict(kind="text_files"), r"data.sources\[0\].glob"),
        (text_files_source("x", layout="lines"), r"data.sources\[0\].layout"),
        (text_files_source("x", weight=-1.0), r"data.sources\[0\].weight"),
        (tfds_source("wikipedia/20230601.en", text_feature=""), r"data.sources\[0\].text_feature"),
        (text_files_source("x", weight=0.0), "every weight is 0"),
    ],
)
def test_bad_sources_name_the_entry(source, message):
    cfg = data_config()
    cfg.sources = [source]
    with pytest.raises(ValueError, match=message):
        validate(cfg)


def test_batch_size_not_divisible_names_both_numbers():
    assert per_process_batch_size(32, 4) == 8
    with pytest.raises(ValueError, match="30 is not divisible by the process count 4"):
        per_process_batch_size(30, 4)
    with pytest.raises(ValueError, match="8 .* not divisible by the 3 local devices"):
        per_process_batch_size(32, 4, local_device_count=3)
