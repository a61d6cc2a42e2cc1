"""Prepare the shared Wikipedia subset with the real bert-base-uncased tokenizer.

    python -m distil_jax.prepare_data --config=configs/prepare_wikipedia.py

Reads ../shared/data/pretrain/wikipedia_en_2019_chinapedia/train.*.txt.gz (four
files, ~17k documents, ~210k paragraphs) and writes workdirs/prepared/wikipedia_en_2019:
expect about 21M tokens in ~210k sequences, at a few hundred thousand tokens/s
per tokenising process; a second run reuses the result at once. The same data
section as configs/base.py, so training finds the shards already there.
"""

import ml_collections

from distil_jax.data.config import data_config, text_files_source


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    # The teacher directory; preparation reads only its tokenizer files. The shared
    # copy of bert-base-uncased's tokenizer has the same vocabulary (no weights).
    config.teacher = "../shared/data/tokenizers/bert-base-uncased"
    # The data section (every field is described in distil_jax/data/config.py).
    config.data = data_config()
    # The four training files of the shared Wikipedia subset (paragraph layout).
    config.data.sources = [
        text_files_source("../shared/data/pretrain/wikipedia_en_2019_chinapedia/train.*.txt.gz")
    ]
    # Where the shards go (and where training reads them).
    config.data.prepared_dir = "workdirs/prepared/wikipedia_en_2019"
    # Half a percent of documents held out for the validation loss, as in base.py.
    config.data.held_out_fraction = 0.005
    # Tokenising processes: one per spare core.
    config.data.num_workers = 4
    return config
