"""Exact-match scoring: hand-made logits/ids edge cases, and teacher-forced == real greedy generation."""
import pytest
import torch
import transformers
from datasets import Dataset

from fastfreeze.lab.continual.evaluate import (EvalSet, answers_match, evaluate, exact_match_from_generation,
                                           generate_exact_match, score_predictions)

EOS = 2
IG = -100


def _labels(prompt_len, answer):
    return torch.tensor([[IG] * prompt_len + list(answer) + [EOS]])


def _pred_for(labels, answer_pred):
    """pred[:, i] predicts token i+1; fill the supervised positions with `answer_pred`, others with 0."""
    L = labels.shape[1]
    pred = torch.zeros((1, L - 1), dtype=torch.long)
    first = int((labels[0] != IG).nonzero()[0])
    for k, tok in enumerate(answer_pred):
        if first - 1 + k < L - 1:
            pred[0, first - 1 + k] = tok
    return pred


def test_exact_match_requires_answer_then_eos():
    lab = _labels(3, [7, 8])
    em, first = score_predictions(_pred_for(lab, [7, 8, EOS]), lab)
    assert em.item() and first.item()


def test_missing_eos_is_wrong_even_with_right_answer_tokens():
    lab = _labels(3, [7, 8])
    em, first = score_predictions(_pred_for(lab, [7, 8, 9]), lab)  # would keep generating
    assert not em.item() and first.item()


def test_wrong_middle_token_keeps_first_token_accuracy():
    lab = _labels(3, [7, 8])
    em, first = score_predictions(_pred_for(lab, [7, 5, EOS]), lab)
    assert not em.item() and first.item()
    em, first = score_predictions(_pred_for(lab, [6, 8, EOS]), lab)
    assert not em.item() and not first.item()


def test_row_without_supervised_tokens_scores_false():
    lab = torch.full((1, 4), IG)
    em, first = score_predictions(torch.zeros((1, 3), dtype=torch.long), lab)
    assert not em.item() and not first.item()


def test_generation_scorer_edge_cases():
    assert exact_match_from_generation([7, 8, EOS], [7, 8], EOS)
    assert exact_match_from_generation([7, 8, EOS, 4, 4], [7, 8], EOS)  # nothing is generated after EOS
    assert not exact_match_from_generation([7, 8, 9, EOS], [7, 8], EOS)  # extra token
    assert not exact_match_from_generation([7, 8], [7, 8], EOS)  # missing EOS (ran out of tokens)
    assert not exact_match_from_generation([7, EOS], [7, 8], EOS)  # stopped early


def test_text_match_ignores_leading_space_only():
    assert answers_match("May 28, 1952", " May 28, 1952")
    assert not answers_match("May 28, 1952 in", " May 28, 1952")
    assert not answers_match("May 28 1952", " May 28, 1952")


def _trained_tiny_model_and_set():
    """A 2-layer Llama memorizes part of a toy QA set, so exact match is mixed across rows."""
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
                                   pad_token_id=0, eos_token_id=EOS, bos_token_id=1, tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(cfg)
    g = torch.Generator().manual_seed(1)
    rows = []
    for i in range(24):
        plen, alen = int(torch.randint(3, 7, (1,), generator=g)), int(torch.randint(1, 4, (1,), generator=g))
        ids = torch.randint(3, 40, (plen + alen,), generator=g).tolist() + [EOS]
        rows.append({"input_ids": ids, "labels": [IG] * plen + ids[plen:], "attribute": f"a{i % 3}"})
    ds = Dataset.from_list(rows)
    es = EvalSet(ds, pad_token_id=0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(60):  # train on the first 16 rows only, partially: some rows right, some wrong
        out = model(input_ids=es.input_ids[:16], attention_mask=es.attention_mask[:16], labels=es.labels[:16])
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    return model, es


def test_teacher_forced_equals_generate():
    model, es = _trained_tiny_model_and_set()
    gen = generate_exact_match(model, es, eos_token_id=EOS, pad_token_id=0)
    tf = evaluate(model, es, batch_size=5)  # small batches: padding varies per batch
    # Per-row agreement, and a non-trivial mix of right and wrong rows (else the check proves nothing).
    from fastfreeze.lab.continual.evaluate import score_logits
    with torch.no_grad():
        em, _ = score_logits(model(input_ids=es.input_ids, attention_mask=es.attention_mask).logits, es.labels)
    assert torch.equal(em, gen)
    assert 0 < int(gen.sum()) < len(gen)
    per_attr = [v["exact_match"] for v in tf["per_attribute"].values()]
    assert tf["exact_match"] == pytest.approx(sum(per_attr) / len(per_attr))
    assert tf["n"] == len(es)
