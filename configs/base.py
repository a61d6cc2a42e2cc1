"""The paper's recipe: distil bert-base-uncased into a 6-layer DistilBERT on Wikipedia.

    python -m distil_jax.prepare_data --config=configs/base.py      # once: tokenise the corpus
    python -m distil_jax.main --config=configs/base.py --workdir=workdirs/base

Needs the teacher (a local directory or, with a network, the Hub name) and an
accelerator: ~4K sequences of up to 512 tokens per optimiser step, 3 epochs.
Expect the step-0 losses near ce ~ 1-3, mlm ~ 2-4, cos ~ 0.1-0.3 (the student
starts as a copy of every other teacher layer) and the MLM loss to fall steadily.
The student is exported to `<workdir>/export` (transformers DistilBertForMaskedLM).
Override any field on the command line, e.g. `--config.batch.micro_batch_size=64`.
"""

import ml_collections

from distil_jax.data.config import data_config, text_files_source


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    # "distill": train the student against the teacher with the triple loss.
    # "pretrain": MLM only, no teacher (to make a teacher, or the no-distillation ablation).
    config.mode = "distill"
    # The teacher: a Hugging Face BERT directory (config.json + model.safetensors or
    # pytorch_model.bin + tokenizer files) or a Hub name (needs a network).
    config.teacher = "bert-base-uncased"
    # Tokenizer directory; "" = the teacher's (distillation needs the teacher's ids).
    config.tokenizer = ""

    config.student = ml_collections.ConfigDict()
    # How the trained model starts: "teacher" (every other teacher layer, DESIGN §1.5),
    # "random", or a Hugging Face BERT/DistilBERT directory to continue from.
    config.student.init = "teacher"
    # Depth of the student (teacher init and random init).
    config.student.num_layers = 6
    # Teacher layers to copy, e.g. "0,2,4,7,9,11"; "" = spread evenly, first and last kept.
    config.student.layers = ""
    # Architecture for random init: "distilbert" or "bert" (pretrain mode makes teachers).
    config.student.arch = "distilbert"
    # Sizes for random init; 0 = the teacher's (vocab_size 0 = the tokenizer's).
    config.student.vocab_size = 0
    config.student.hidden_size = 0
    config.student.num_heads = 0
    config.student.intermediate_size = 0
    config.student.max_position_embeddings = 0
    # Dropout of the trained model; -1 keeps the checkpoint's (0.1 for DistilBERT).
    config.student.hidden_dropout = -1.0
    config.student.attention_dropout = -1.0

    config.loss = ml_collections.ConfigDict()
    # Softmax temperature of the distillation cross-entropy (paper: 2.0).
    config.loss.temperature = 2.0
    # Weights of the loss terms (paper: ce 5, mlm 2, cos 1; mse off).
    config.loss.alpha_ce = 5.0
    config.loss.alpha_mlm = 2.0
    config.loss.alpha_cos = 1.0
    config.loss.alpha_mse = 0.0
    # Distillation CE over the MLM-masked positions only (default: every real token).
    config.loss.restrict_ce_to_mask = False
    # Positions per sequence whose [B, Lc, V] logits are materialised at once when
    # the CE covers every token (memory: 2 x B x Lc x V floats per chunk).
    config.loss.logits_chunk_len = 128
    # Every-token CE: form the logits' gradient in the forward pass (distil_jax/vocab_losses.py)
    # instead of recomputing both projections in the backward pass (False: remat + autodiff).
    config.loss.fused_vocab_grad = True

    config.masking = ml_collections.ConfigDict()
    # Share of real tokens chosen for prediction (BERT: 15%).
    config.masking.mlm_mask_prop = 0.15
    # Of the chosen tokens: replaced by [MASK] / kept / replaced by a random id.
    config.masking.word_mask = 0.8
    config.masking.word_keep = 0.1
    config.masking.word_rand = 0.1
    # Choice weight count(token) ** -smoothing: rarer tokens are masked more (0 = uniform).
    config.masking.mlm_smoothing = 0.7

    config.optim = ml_collections.ConfigDict()
    # Peak learning rate of AdamW (reference: 5e-4).
    config.optim.learning_rate = 5e-4
    # Share of optimiser steps spent in linear warm-up (then linear decay to 0).
    config.optim.warmup_fraction = 0.05
    config.optim.b1 = 0.9
    config.optim.b2 = 0.98
    config.optim.eps = 1e-6
    # Decoupled weight decay on kernels and embeddings, never biases or LayerNorm.
    config.optim.weight_decay = 0.0
    # Clip the accumulated gradient at this global norm.
    config.optim.clip_norm = 5.0

    config.batch = ml_collections.ConfigDict()
    # Sequences per micro-step across all devices and hosts (one jitted step).
    config.batch.micro_batch_size = 256
    # Micro-steps accumulated into one optimiser step: 256 x 16 = 4,096 sequences.
    config.batch.accumulation_steps = 16

    # Length of training: optimiser steps; 0 = num_epochs passes over the corpus.
    config.num_train_steps = 0
    config.num_epochs = 3
    # Stop (with a checkpoint) after this many optimiser steps in this process;
    # 0 = run to the end. For time-limited jobs: resubmit and the run resumes.
    config.steps_per_run = 0

    config.mesh = ml_collections.ConfigDict()
    # Device mesh sizes; one may be -1 ("the rest"). data x fsdp split the batch;
    # fsdp also splits params and optimiser state; tensor splits heads/MLP/vocab.
    config.mesh.data = -1
    config.mesh.fsdp = 1
    config.mesh.tensor = 1

    # Compute dtype: "bfloat16" (TPU, A100/H100), "float16" (V100, with dynamic loss
    # scaling) or "float32". Master weights and optimiser state stay float32.
    config.dtype = "bfloat16"
    # Recompute each student layer in the backward pass (saves activation memory).
    config.remat = False
    # jax.nn.dot_product_attention implementation: "" (JAX's default, which is XLA's),
    # "xla", or "cudnn" (fused kernel, Ampere or newer GPUs only).
    config.attention_implementation = ""

    # Seed of masking, dropout and random init (reference: 56).
    config.seed = 56
    # Progress and metrics every N optimiser steps (metrics.jsonl, TensorBoard).
    config.log_every = 10
    # Held-out MLM evaluation every N optimiser steps (0 = only at the end; needs
    # data.held_out_fraction > 0), over at most eval_batches batches.
    config.eval_every = 1000
    config.eval_batches = 50
    # Checkpoint every N optimiser steps, keeping the last `keep_checkpoints`.
    config.checkpoint_every = 1000
    config.keep_checkpoints = 3
    # Export the student as a transformers directory at the end ("" = <workdir>/export).
    config.export_dir = ""

    config.data = data_config()
    config.data.sources = [
        text_files_source("../shared/data/pretrain/wikipedia_en_2019_chinapedia/train.*.txt.gz")
    ]
    config.data.prepared_dir = "workdirs/prepared/wikipedia_en_2019"
    config.data.max_len = 512
    config.data.held_out_fraction = 0.005
    return config
