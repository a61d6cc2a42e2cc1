"""TFDS builder that writes staged sequences as array_record shards.

Reading the result needs neither TensorFlow nor this module:
``tfds.builder_from_directory(path).as_data_source(split)`` or
``tfds.data_source('distil_sequences', data_dir=prepared_dir)``.
Each record is ``{'input_ids': uint16/uint32 [length]}``. Shuffling on write is
disabled so record i is the i-th staged sequence: the loader's length index
(``<split>_index.npz``) relies on that order.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from distil_jax.data.staging import SplitStaging

NAME = "distil_sequences"
DATASET_VERSION = "1.0.0"


class DistilSequences(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Tokenised training sequences ([CLS] ... [SEP]) of a distillation corpus.

    Not registered by name: the class exists only to write. Readers, including
    ``tfds.data_source('distil_sequences', data_dir=prepared_dir)``, then always
    rebuild the builder from the written files, whose features.json has the id
    dtype, instead of from this code, which needs the staged splits.
    """

    VERSION = tfds.core.Version(DATASET_VERSION)
    RELEASE_NOTES = {DATASET_VERSION: "Sequences built by distil_jax.prepare_data."}

    def __init__(self, *, staged: Mapping[str, SplitStaging], id_dtype: np.dtype, **kwargs) -> None:
        self._staged = dict(staged)
        self._id_dtype = np.dtype(id_dtype)
        super().__init__(**kwargs)

    # tfds 4.9.10 resolves a builder's code path through `importlib_resources`,
    # a package it does not declare (and which is not installed here); naming the
    # file directly avoids that lookup. Only the (absent) checksums file uses it.
    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        return epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        ids = tfds.features.Tensor(
            shape=(None,),
            dtype=self._id_dtype,
            # Raw bytes: 2 bytes per uint16 id, decoded by np.frombuffer. The default
            # encoding stores int64 varints in a tf.train.Example (larger, slower).
            encoding=tfds.features.Encoding.BYTES,
        )
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({"input_ids": ids}),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download: the sequences are staged locally
        return {split: self._generate_examples(split) for split in self._staged}

    def _generate_examples(self, split: str):
        for i, seq in enumerate(self._staged[split].sequences()):
            yield i, {"input_ids": seq}


def write_shards(
    data_dir: str, staged: Mapping[str, SplitStaging], id_dtype: np.dtype, download_dir: str
) -> str:
    """Write the staged splits under ``data_dir``; returns the dataset directory."""
    builder = DistilSequences(staged=staged, id_dtype=id_dtype, data_dir=data_dir)
    builder.download_and_prepare(
        file_format="array_record",
        download_dir=download_dir,
        download_config=tfds.download.DownloadConfig(
            # Statistics would need TensorFlow; the summary has what we need.
            compute_stats=tfds.download.ComputeStatsMode.SKIP,
        ),
    )
    return str(builder.data_dir)


def open_shards(dataset_dir: str, split: str):
    """Random-access source of a written split: ``source[i] == {'input_ids': ...}``."""
    return tfds.builder_from_directory(dataset_dir).as_data_source(split=split)
