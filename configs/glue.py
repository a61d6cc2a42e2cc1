"""Fine-tune and score one model on GLUE tasks with the paper's protocol.

    python -m distil_jax.finetune --config=configs/glue.py \
        --config.model=HF_OR_EXPORT_DIR --config.task=sst2 \
        --config.data_dir=PATH/TO/glue_data [--workdir=workdirs/finetune]

`model` is any Hugging Face BERT or DistilBERT directory (a *ForMaskedLM
checkpoint such as an exported student gets a fresh head; a fine-tuned one
keeps its own). `task` is one task, a comma list, "glue" (all nine) or "all"
(+ IMDb, SQuAD). Set `teacher` to score a second model with the same protocol
and see both side by side with the student's retention in %.

Expect, for bert-base-uncased / distilbert-base-uncased, the paper's Table 1
(DESIGN.md §1.6) within a point or two; SST-2 takes ~1 GPU-hour per model at
the default grid (3 learning rates x 5 seeds). Writes `runs.jsonl` (one line
per finished run; a restarted sweep skips them), `results.json` and
`report.md` to the workdir, and with `export=best` the best fine-tuned model
per task as a transformers directory under `<workdir>/export/`.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    # The model to fine-tune: a Hugging Face BERT/DistilBERT directory or Hub name.
    config.model = ""
    # Optional teacher scored with the same protocol; "" = the model alone.
    config.teacher = ""
    # Tokenizer directory; "" = each model's own directory (an export holds one).
    config.tokenizer = ""

    # One task, a comma list ("sst2,mrpc,cola"), "glue" (the nine tasks) or "all".
    config.task = "sst2"
    # "local": a directory in the download_glue_data.py layout (CoLA/, SST-2/, ...);
    # "tfds": TFDS array_record data sources (glue/*, imdb_reviews, squad).
    config.data_source = "local"
    # Local data root (holding CoLA/, SST-2/, ...), or the TFDS data dir ("" = default).
    config.data_dir = "glue_data"
    # Let TFDS download and prepare a missing dataset (needs a network; some builders
    # need TensorFlow to prepare). Off: a missing dataset is a clear error at once.
    config.tfds_download = False
    # Local IMDb folder with train.tsv / test.tsv (sentence, label); "" = <data_dir>/IMDb.
    config.imdb_dir = ""
    # Local SQuAD folder with train-v1.1.json / dev-v1.1.json; "" = <data_dir>/SQuAD.
    config.squad_dir = ""
    # Use a fixed random subset of the training / evaluation examples; 0 = all.
    config.max_train_examples = 0
    config.max_eval_examples = 0

    # Tokens per sequence (pair) for the GLUE tasks; the paper used 128.
    config.max_length = 128
    # Tokens per IMDb review (most reviews are longer than 128 tokens).
    config.imdb_max_length = 512
    # Batch lengths compiled for, comma-separated; "" = max_length/4, /2 and max_length.
    config.length_buckets = ""
    # Sequences per optimiser step and per prediction batch (over all devices).
    config.train_batch_size = 32
    config.eval_batch_size = 128

    # The grid: every learning rate x number of epochs, each with num_seeds seeds;
    # the report shows, per task, the grid point with the best median over seeds.
    config.learning_rates = "2e-5,3e-5,5e-5"
    config.epochs = "3"
    config.num_seeds = 5
    # First seed (seeds are seed .. seed + num_seeds - 1): head init, shuffling, dropout.
    config.seed = 0

    config.optim = ml_collections.ConfigDict()
    # Share of the optimiser steps spent warming the learning rate up from 0.
    config.optim.warmup_fraction = 0.1
    # AdamW moments and epsilon (transformers' defaults).
    config.optim.b1 = 0.9
    config.optim.b2 = 0.999
    config.optim.eps = 1e-8
    # Decoupled weight decay on kernels and embeddings (not biases or LayerNorm).
    config.optim.weight_decay = 0.01
    # Clip the gradient at this global norm.
    config.optim.clip_norm = 1.0
    # Hidden-state dropout in the encoder during fine-tuning; -1 keeps the checkpoint's.
    config.hidden_dropout = -1.0

    config.squad = ml_collections.ConfigDict()
    # Tokens per SQuAD window ([CLS] question [SEP] context part [SEP]).
    config.squad.max_length = 384
    # Tokens between the starts of consecutive windows over a long context.
    config.squad.doc_stride = 128
    # Questions are cut to this many tokens.
    config.squad.max_query_length = 64
    # Longest answer considered when decoding, in tokens.
    config.squad.max_answer_length = 30
    # Start and end candidates per window searched for the best span.
    config.squad.n_best = 20

    config.mesh = ml_collections.ConfigDict()
    # Device mesh (as in training): data x fsdp split the batch, fsdp and tensor the params.
    config.mesh.data = -1
    config.mesh.fsdp = 1
    config.mesh.tensor = 1
    # Compute dtype: "float32", "bfloat16" or "float16"; weights stay float32.
    config.dtype = "float32"
    # Compile with XLA's backend optimisations off: much faster compiles, slower steps.
    # For tests and quick CPU checks of tiny models only.
    config.fast_compile = False

    # "best": export the best-scoring run of every (model, task) to <workdir>/export/;
    # "none": keep scores only.
    config.export = "none"
    # Print the paper's rows in the report tables for reference.
    config.report_paper_rows = True
    # Show progress bars; update the shown loss every log_every steps.
    config.progress = True
    config.log_every = 50
    return config
