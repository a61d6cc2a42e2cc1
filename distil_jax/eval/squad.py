"""SQuAD v1.1: reading, windowed features and n-best span decoding.

A context longer than the window is cut into overlapping windows whose starts
are `doc_stride` tokens apart (BERT's definition of the document stride). In
training a window whose context does not hold the whole first answer points
at [CLS] (position 0), as the reference does. At evaluation every window
proposes its `n_best` start and end positions; the best-scoring valid span
(start <= end, inside the context, at most `max_answer_length` tokens) over
all windows of a question is its answer.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os

import numpy as np

from distil_jax.eval.features import Encoded, pad_rows
from distil_jax.eval.readers import open_tfds_source


@dataclasses.dataclass
class SquadExample:
    qid: str
    question: str
    context: str
    answers: list[str]  # gold answer texts (several in dev)
    answer_starts: list[int]  # character offsets into context, one per answer


# ---------------------------------------------------------------------------- reading


def read_squad_json(path: str) -> list[SquadExample]:
    """The official train-v1.1.json / dev-v1.1.json layout."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: expected the official SQuAD v1.1 JSON file")
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)["data"]
        except (json.JSONDecodeError, KeyError) as e:
            raise ValueError(f"{path} is not a SQuAD JSON file (no 'data' list): {e}") from e
    examples = []
    for article in data:
        for paragraph in article["paragraphs"]:
            context = paragraph["context"]
            for qa in paragraph["qas"]:
                answers = qa.get("answers", [])
                examples.append(
                    SquadExample(
                        str(qa["id"]),
                        qa["question"],
                        context,
                        [a["text"] for a in answers],
                        [int(a["answer_start"]) for a in answers],
                    )
                )
    if not examples:
        raise ValueError(f"{path} holds no questions")
    return examples


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def read_squad_tfds(
    split: str, data_dir: str | None = None, download: bool = False
) -> list[SquadExample]:
    source = open_tfds_source("squad/v1.1", split, data_dir, download)
    examples = []
    for i in range(len(source)):
        r = source[i]
        texts = [_text(t) for t in np.asarray(r["answers"]["text"]).reshape(-1)]
        starts = [int(s) for s in np.asarray(r["answers"]["answer_start"]).reshape(-1)]
        examples.append(
            SquadExample(
                _text(r["id"]),
                _text(r["question"]),
                _text(r["context"]),
                texts,
                starts[: len(texts)],
            )
        )
    return examples


# ---------------------------------------------------------------------------- features


@dataclasses.dataclass
class SpanFeatures:
    encoded: Encoded  # input arrays, plus start_positions / end_positions [F]
    offsets: np.ndarray  # [F, L, 2] character span of each token; -1 outside the context
    example_index: np.ndarray  # [F] which example a window belongs to


def _truncated_questions(tokenizer, examples, max_query_length: int) -> tuple[list[str], list]:
    """Questions cut to max_query_length tokens (cut in the text, at a token boundary)."""
    enc = tokenizer(
        [e.question for e in examples], add_special_tokens=False, return_offsets_mapping=True
    )
    questions, lengths = [], []
    for e, offsets in zip(examples, enc["offset_mapping"], strict=True):
        if len(offsets) > max_query_length:
            questions.append(e.question[: offsets[max_query_length - 1][1]])
            lengths.append(max_query_length)
        else:
            questions.append(e.question)
            lengths.append(len(offsets))
    return questions, lengths


def _answer_positions(example, sequence_ids, offsets) -> tuple[int, int]:
    """Token (start, end) of the first answer in this window, or (0, 0) if not inside."""
    if not example.answers:
        return 0, 0
    start_char = example.answer_starts[0]
    end_char = start_char + len(example.answers[0])
    context = [i for i, s in enumerate(sequence_ids) if s == 1]
    if not context:
        return 0, 0
    first, last = context[0], context[-1]
    if offsets[first][0] > start_char or offsets[last][1] < end_char:
        return 0, 0
    start = first
    while start <= last and offsets[start][1] <= start_char:
        start += 1
    end = last
    while end >= first and offsets[end][0] >= end_char:
        end -= 1
    return start, end


def featurize(
    tokenizer,
    examples: list[SquadExample],
    max_length: int = 384,
    doc_stride: int = 128,
    max_query_length: int = 64,
) -> SpanFeatures:
    """Windows of `[CLS] question [SEP] context-part [SEP]` for every example."""
    if max_query_length + 8 > max_length:
        raise ValueError(
            f"max_length {max_length} leaves no room for context after a "
            f"{max_query_length}-token question"
        )
    questions, q_lengths = _truncated_questions(tokenizer, examples, max_query_length)
    # The tokenizer's `stride` is the overlap between windows; BERT's doc_stride is the
    # distance between window starts, so the overlap depends on the question length.
    # One batched call per distinct overlap keeps this fast and exact.
    groups = collections.defaultdict(list)
    for i, q_len in enumerate(q_lengths):
        window = max_length - q_len - 3  # [CLS] q [SEP] ... [SEP]
        groups[max(0, window - doc_stride)].append(i)
    rows: list[tuple] = []  # (example, ids, token types, sequence ids, offsets)
    for overlap, members in sorted(groups.items()):
        enc = tokenizer(
            [questions[i] for i in members],
            [examples[i].context for i in members],
            truncation="only_second",
            max_length=max_length,
            stride=overlap,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            return_token_type_ids=True,
        )
        for f, owner in enumerate(enc["overflow_to_sample_mapping"]):
            rows.append(
                (
                    members[owner],
                    enc["input_ids"][f],
                    enc["token_type_ids"][f],
                    enc.sequence_ids(f),
                    enc["offset_mapping"][f],
                )
            )
    rows.sort(key=lambda r: r[0])  # windows of one example together, in input order
    num = len(rows)
    offsets = np.full((num, max_length, 2), -1, np.int32)
    starts, ends = np.zeros(num, np.int32), np.zeros(num, np.int32)
    for f, (ex, _, _, seq_ids, offs) in enumerate(rows):
        for t, (s, o) in enumerate(zip(seq_ids, offs, strict=True)):
            if s == 1:
                offsets[f, t] = o
        starts[f], ends[f] = _answer_positions(examples[ex], seq_ids, offs)
    lengths = np.asarray([len(r[1]) for r in rows], np.int32)
    arrays = {
        "input_ids": pad_rows([r[1] for r in rows], max_length, tokenizer.pad_token_id or 0),
        "attention_mask": (np.arange(max_length)[None] < lengths[:, None]).astype(np.int32),
        "token_type_ids": pad_rows([r[2] for r in rows], max_length),
        "start_positions": starts,
        "end_positions": ends,
    }
    example_index = np.asarray([r[0] for r in rows], np.int64)
    return SpanFeatures(Encoded(arrays, lengths), offsets, example_index)


# ---------------------------------------------------------------------------- decoding


def decode(
    examples: list[SquadExample],
    features: SpanFeatures,
    start_logits: np.ndarray,  # [F, L]
    end_logits: np.ndarray,  # [F, L]
    n_best: int = 20,
    max_answer_length: int = 30,
) -> dict[str, str]:
    """{question id: best answer text}: the highest start + end logit over valid spans."""
    best: dict[int, tuple[float, str]] = {}
    for f in range(len(features.example_index)):
        ex = int(features.example_index[f])
        offs = features.offsets[f]  # [L, 2]
        s_logits, e_logits = start_logits[f], end_logits[f]
        top_starts = np.argsort(s_logits)[::-1][:n_best]
        top_ends = np.argsort(e_logits)[::-1][:n_best]
        for s in top_starts:
            if offs[s, 0] < 0:
                continue  # not a context token
            for e in top_ends:
                if offs[e, 0] < 0 or e < s or e - s + 1 > max_answer_length:
                    continue
                score = float(s_logits[s] + e_logits[e])
                if ex not in best or score > best[ex][0]:
                    context = examples[ex].context
                    best[ex] = (score, context[offs[s, 0] : offs[e, 1]])
    return {e.qid: best.get(i, (0.0, ""))[1] for i, e in enumerate(examples)}


def gold_answers(examples: list[SquadExample]) -> dict[str, list[str]]:
    return {e.qid: e.answers for e in examples}
