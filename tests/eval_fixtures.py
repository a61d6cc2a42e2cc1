"""Fixtures for the evaluation tests: tiny task models, GLUE-layout files with the
official quirks, a separable toy task and a small SQuAD file (all written by tests)."""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from hf_fixtures import TINY_BERT, WORDS, _randomise, write_tokenizer
from transformers import (
    BertConfig,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForQuestionAnswering,
    DistilBertForSequenceClassification,
)

TINY_DISTILBERT = dict(
    vocab_size=TINY_BERT["vocab_size"],
    dim=32,
    n_layers=2,
    n_heads=4,
    hidden_dim=48,
    max_position_embeddings=64,
)
_CLASSES = {
    ("bert", "sequence"): (BertConfig, BertForSequenceClassification, TINY_BERT),
    ("bert", "span"): (BertConfig, BertForQuestionAnswering, TINY_BERT),
    ("distilbert", "sequence"): (
        DistilBertConfig,
        DistilBertForSequenceClassification,
        TINY_DISTILBERT,
    ),
    ("distilbert", "span"): (DistilBertConfig, DistilBertForQuestionAnswering, TINY_DISTILBERT),
}


def torch_task_model(arch: str, kind: str, num_labels: int = 2, seed: int = 0, **overrides):
    """A random tiny transformers task model (eval mode, every tensor non-trivial)."""
    config_cls, model_cls, base = _CLASSES[(arch, "span" if kind == "span" else "sequence")]
    torch.manual_seed(seed)
    kw = {**base, **overrides}
    if kind != "span":
        kw["num_labels"] = num_labels
        kw["problem_type"] = "regression" if kind == "regression" else "single_label_classification"
    model = model_cls(config_cls(**kw)).eval()
    _randomise(model, seed)
    return model


# ---------------------------------------------------------------------------- GLUE files


def write_lines(path: str, lines: list[str], bom: bool = False, trailing_newline: bool = True):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    text = "\n".join(lines) + ("\n" if trailing_newline else "")
    with open(path, "w", encoding="utf-8-sig" if bom else "utf-8", newline="") as f:
        f.write(text)
    return path


def write_glue_quirks(root: str) -> str:
    """SST-2, MRPC (BOM), CoLA (no header, no trailing newline), STS-B, MNLI and QQP
    (one truncated row), with bare double quotes in sentences."""
    write_lines(
        f"{root}/SST-2/train.tsv",
        ["sentence\tlabel", 'a "great" film \t1', "dull , dull , dull \t0", "it's \"fine\t1"],
    )
    write_lines(f"{root}/SST-2/dev.tsv", ["sentence\tlabel", "so bad \t0", "lovely \t1"])
    mrpc_header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"
    mrpc_rows = [
        '1\t11\t12\tHe said " hello " .\tHe said hello .',
        "0\t13\t14\tShares fell .\tThe sky is blue .",
    ]
    write_lines(f"{root}/MRPC/train.tsv", [mrpc_header, *mrpc_rows], bom=True)
    write_lines(f"{root}/MRPC/dev.tsv", [mrpc_header, mrpc_rows[1]], bom=True)
    cola = ["gj04\t1\t\tThe sailors rode the breeze .", 'w_80\t0\t*\tJohn "talked himself .']
    write_lines(f"{root}/CoLA/train.tsv", cola)
    write_lines(f"{root}/CoLA/dev.tsv", cola[::-1], trailing_newline=False)
    sts_header = "\t".join(
        "index genre filename year old_index source1 source2 sentence1 sentence2 score".split()
    )
    sts = "\t".join(["0", "main-captions", "MSRvid", "2012test", "0001", "none", "none"])
    sts += "\tA man plays .\tA man plays guitar .\t"
    write_lines(f"{root}/STS-B/train.tsv", [sts_header, sts + "5.000", sts + "0.5"])
    write_lines(f"{root}/STS-B/dev.tsv", [sts_header, sts + "3.8"])
    mnli_header = "index\tpromptID\tpairID\tgenre\tsentence1\tsentence2\tlabel1\tgold_label"
    mnli = [
        "0\t1\t1n\tfiction\tA cat sat .\tAn animal sat .\tentailment\tentailment",
        "1\t2\t2c\tfiction\tIt rains .\tIt is dry .\tcontradiction\tcontradiction",
    ]
    write_lines(f"{root}/MNLI/train.tsv", [mnli_header, *mnli])
    write_lines(f"{root}/MNLI/dev_matched.tsv", [mnli_header, mnli[0]])
    write_lines(f"{root}/MNLI/dev_mismatched.tsv", [mnli_header, mnli[1]])
    qqp_header = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate"
    write_lines(
        f"{root}/QQP/train.tsv",
        [qqp_header, "0\t1\t2\tHow are you?\tHow do you do?\t1", "1\t3\t4\tWhy?"],
    )
    return root


# ---------------------------------------------------------------------------- toy task


def toy_sentences(n: int, seed: int = 0) -> tuple[list[str], list[int]]:
    """Sentences of filler words plus one cue word: 'cat' -> 1, 'dog' -> 0. Separable."""
    rng = np.random.default_rng(seed)
    filler = [w for w in WORDS if w not in ("cat", "dog") and not w.startswith("##")]
    sentences, labels = [], []
    for _ in range(n):
        label = int(rng.integers(2))
        words = list(rng.choice(filler, size=int(rng.integers(3, 8))))
        words.insert(int(rng.integers(len(words) + 1)), "cat" if label else "dog")
        sentences.append(" ".join(words))
        labels.append(label)
    return sentences, labels


def write_toy_sst2(root: str, n_train: int = 256, n_dev: int = 64) -> str:
    """The toy task in the SST-2 layout, so it goes through the real reader."""
    for split, n, seed in (("train", n_train, 0), ("dev", n_dev, 1)):
        sentences, labels = toy_sentences(n, seed)
        rows = [f"{s}\t{y}" for s, y in zip(sentences, labels, strict=True)]
        write_lines(f"{root}/SST-2/{split}.tsv", ["sentence\tlabel", *rows])
    return root


def write_tiny_bert_mlm(directory: str, seed: int = 0, **overrides) -> str:
    """A tiny random BertForMaskedLM with the fixture tokenizer (what users fine-tune)."""
    from hf_fixtures import bert_teacher, save_hf

    return save_hf(bert_teacher(seed, **overrides), directory)


# ---------------------------------------------------------------------------- SQuAD


def squad_json(path: str) -> str:
    contexts = [
        ("the cat sat on the mat and the dog ran fast", [("who sat", "the cat")]),
        (
            "he ran up the hill . she ran down the hill . they sat by the red mat",
            [("who ran down", "she"), ("where they sat", "by the red mat")],
        ),
    ]
    data = {"version": "1.1", "data": [{"title": "t", "paragraphs": []}]}
    n = 0
    for context, qas in contexts:
        paragraph = {"context": context, "qas": []}
        for question, text in qas:
            start = context.index(text)
            answers = [{"text": text, "answer_start": start}] * 2
            paragraph["qas"].append({"id": f"q{n}", "question": question, "answers": answers})
            n += 1
        data["data"][0]["paragraphs"].append(paragraph)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f)
    return path


__all__ = ["write_tokenizer", "torch_task_model", "write_glue_quirks", "write_toy_sst2"]
