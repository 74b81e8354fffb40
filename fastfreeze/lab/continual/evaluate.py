"""Exact match and first-token accuracy for QA: teacher-forced in batch, with a generate-based cross-check.

Greedy decoding produces "answer tokens, then EOS" exactly when, at every supervised position,
the argmax of the teacher-forced logits equals the target token: by induction the greedy prefix
equals the teacher-forced prefix as long as every earlier argmax matched. So one forward pass
per batch scores exact match identically to greedy generation (`generate_exact_match` proves it
in a test), at a fraction of the cost.
"""
from __future__ import annotations

from collections import defaultdict

import torch
from transformers import TrainerCallback

from fastfreeze.data.collate import IGNORE_INDEX as IGNORE
from fastfreeze.trace import eval_mode



def score_logits(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row (exact_match, first_token_correct) bools from teacher-forced logits [B, L, V] and labels [B, L].

    Usage: `em, first = score_logits(model(ids).logits, labels)`. Labels are -100 outside the
    answer; the answer's supervised tokens (answer + EOS) must all be the argmax of the previous
    position. A row with no supervised token scores False.
    """
    pred = logits[:, :-1].argmax(-1)
    return score_predictions(pred, labels)


def score_predictions(pred: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """As `score_logits`, from argmax ids `pred[:, i]` = prediction for token i+1."""
    target = labels[:, 1:]
    mask = target != IGNORE
    has_any = mask.any(1)
    em = ((pred == target) | ~mask).all(1) & has_any
    first_pos = mask.int().argmax(1)  # index of the first supervised position
    first = (pred.gather(1, first_pos[:, None]) == target.gather(1, first_pos[:, None])).squeeze(1) & has_any
    return em, first


def exact_match_from_generation(generated: list[int], answer: list[int], eos_token_id: int) -> bool:
    """Greedy-generation exact match on ids: the continuation must be `answer` then EOS (anything after EOS is never generated).

    Usage: `exact_match_from_generation(out_ids, answer_ids, tok.eos_token_id)`. Extra tokens
    before EOS or a missing EOS score False.
    """
    target = list(answer) + [eos_token_id]
    return list(generated[: len(target)]) == target


def answers_match(predicted: str, gold: str) -> bool:
    """Text-level exact match: equal after stripping surrounding whitespace (the answer's leading space is format, not content)."""
    return predicted.strip() == gold.strip()


class EvalSet:
    """A tokenized QA split packed once into right-padded tensors. Usage: `EvalSet(tokenized_ds, pad_id)`."""

    def __init__(self, dataset, pad_token_id: int, max_examples: int | None = None, seed: int = 0):
        n = len(dataset)
        if max_examples is not None and max_examples < n:
            g = torch.Generator().manual_seed(seed)
            idx = sorted(torch.randperm(n, generator=g)[:max_examples].tolist())
            dataset = dataset.select(idx)
        rows = dataset["input_ids"]
        labels = dataset["labels"]
        length = max(len(r) for r in rows)
        self.input_ids = torch.full((len(rows), length), pad_token_id, dtype=torch.long)
        self.attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        self.labels = torch.full((len(rows), length), IGNORE, dtype=torch.long)
        self.lengths = torch.tensor([len(r) for r in rows])
        for i, (r, lab) in enumerate(zip(rows, labels)):
            self.input_ids[i, : len(r)] = torch.tensor(r)
            self.attention_mask[i, : len(r)] = 1
            self.labels[i, : len(lab)] = torch.tensor(lab)
        cols = dataset.column_names
        self.attributes = list(dataset["attribute"]) if "attribute" in cols else ["all"] * len(rows)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def batches(self, batch_size: int, device):
        """(input_ids, attention_mask, labels) per batch, cut to the batch's longest row, on `device`.

        Usage: `for ids, mask, labels in evalset.batches(256, model.device): ...`
        """
        for start in range(0, len(self), batch_size):
            end = start + batch_size
            width = int(self.lengths[start:end].max())
            yield tuple(t[start:end, :width].to(device) for t in (self.input_ids, self.attention_mask, self.labels))


@torch.no_grad()
def evaluate(model, evalset: EvalSet, batch_size: int = 256) -> dict:
    """Teacher-forced exact match and first-token accuracy, overall and per attribute.

    Usage: `evaluate(model, EvalSet(ds, pad_id))["exact_match"]`. The overall numbers are the
    mean over attributes (the paper's average over the six attributes; equal to the plain mean
    when every person has every attribute).
    """
    device = next(model.parameters()).device
    ems, firsts = [], []
    with eval_mode(model):
        for ids, mask, labels in evalset.batches(batch_size, device):
            logits = model(input_ids=ids, attention_mask=mask).logits
            em, first = score_logits(logits, labels)
            ems.append(em.cpu())
            firsts.append(first.cpu())
    return summarize(torch.cat(ems), torch.cat(firsts), evalset.attributes)


def summarize(em: torch.Tensor, first: torch.Tensor, attributes: list[str]) -> dict:
    """Mean-over-attributes accuracies from per-row bools, and `correct`: the plain count of exact-match rows.

    Thresholds compare `correct` with `thresholds.rows_needed(fraction, n)`; it equals the mean over
    attributes times n when every attribute has as many rows (Biography: each person is asked each once)."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, a in enumerate(attributes):
        groups[a].append(i)
    per_attr = {
        a: {"exact_match": em[idx].float().mean().item(), "first_token": first[idx].float().mean().item()}
        for a, idx in sorted(groups.items())
    }
    return {
        "exact_match": sum(v["exact_match"] for v in per_attr.values()) / max(len(per_attr), 1),
        "first_token": sum(v["first_token"] for v in per_attr.values()) / max(len(per_attr), 1),
        "correct": int(em.sum()),
        "n": int(em.numel()),
        "per_attribute": per_attr,
    }


@torch.no_grad()
def generate_exact_match(model, evalset: EvalSet, eos_token_id: int, pad_token_id: int) -> torch.Tensor:
    """Per-row exact match by real greedy `model.generate` (slow; the reference for `evaluate`).

    Usage: `generate_exact_match(model, evalset, tok.eos_token_id, tok.pad_token_id).float().mean()`.
    """
    device = next(model.parameters()).device
    out = []
    with eval_mode(model):
        for i in range(len(evalset)):
            labels = evalset.labels[i]
            supervised = (labels != IGNORE).nonzero().flatten()
            prompt_len = int(supervised[0])
            target = labels[supervised].tolist()
            answer = target[:-1] if target and target[-1] == eos_token_id else target
            prompt = evalset.input_ids[i, :prompt_len][None].to(device)
            gen = model.generate(
                input_ids=prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=len(answer) + 1,
                do_sample=False,
                num_beams=1,
                eos_token_id=eos_token_id,
                pad_token_id=pad_token_id,
            )
            out.append(exact_match_from_generation(gen[0, prompt_len:].tolist(), answer, eos_token_id))
    return torch.tensor(out)


class DenseEvalCallback(TrainerCallback):
    """TrainerCallback scoring an old task every `every` steps up to `until` (and at step 0): alignment collapse.

    Usage: `cb = DenseEvalCallback(EvalSet(task0_test, pad), every=5, until=200)`; after training,
    `cb.history` is a list of {"step", "exact_match", "first_token"}.
    """

    def __init__(self, evalset: EvalSet, every: int = 5, until: int = 200, batch_size: int = 256):
        self.evalset, self.every, self.until, self.batch_size = evalset, every, until, batch_size
        self.history: list[dict] = []

    def _record(self, step: int, model) -> None:
        r = evaluate(model, self.evalset, self.batch_size)
        self.history.append({"step": step, "exact_match": r["exact_match"], "first_token": r["first_token"]})

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._record(0, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        if step <= self.until and step % self.every == 0:
            self._record(step, model)
