"""Tests for the word tokenizer and QA/bio tokenization (label masking, the loss of a padded batch)."""

from __future__ import annotations

import copy

import datasets
import pytest
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from fastfreeze.data import (
    IGNORE_INDEX,
    PaddingCollator,
    build_word_tokenizer,
    tokenize_bios,
    tokenize_qa,
)

QA_SPLITS = ("task0_train", "task0_test", "task1_train")


def _col(ds: datasets.Dataset, name: str) -> list:
    """A column as a plain list (newer datasets return a lazy Column object)."""
    return list(ds[name])


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_special_tokens_and_no_automatic_additions(tok):
    assert (tok.pad_token_id, tok.unk_token_id, tok.eos_token_id) == (0, 1, 2)
    assert tok.convert_ids_to_tokens([0, 1, 2]) == ["<pad>", "<unk>", "<eos>"]
    assert tok.bos_token is None
    # Nothing is added automatically, even with add_special_tokens=True (EOS is appended by us).
    assert tok("What is")["input_ids"] == _ids(tok, "What is")
    assert tok.convert_ids_to_tokens(_ids(tok, "What is")) == ["\u2581What", "\u2581is"]


def test_vocab_covers_every_word_in_the_data(dd, tok):
    unk = tok.unk_token_id
    columns = [("bios", "text"), ("people", "name")] + [(s, c) for s in QA_SPLITS for c in ("prompt", "answer")]
    for split, col in columns:
        for ids in tok(_col(dd[split], col), add_special_tokens=False)["input_ids"]:
            assert unk not in ids, split
    assert _ids(tok, "Zyzzyva")[-1] == unk, "an unseen word maps to <unk>"


def test_vocab_is_exactly_the_words_of_the_data(dd, tok):
    # build_word_tokenizer collects words from distinct space-separated chunks (fast); it must give
    # the same word set as pre-tokenizing every full text.
    pre = tok.backend_tokenizer.pre_tokenizer
    words = set()
    for split in ("bios", *QA_SPLITS):
        for col in ("text", "prompt", "answer"):
            if col in dd[split].column_names:
                for text in _col(dd[split], col):
                    words.update(w for w, _ in pre.pre_tokenize_str(text))
    assert set(tok.get_vocab()) == words | {"<pad>", "<unk>", "<eos>", "\u2581"}
    extra = build_word_tokenizer(dd, extra_texts=["Zyzzyva  lives."])
    assert {"\u2581Zyzzyva", "\u2581lives"} <= set(extra.get_vocab())
    assert extra.unk_token_id not in _ids(extra, "Zyzzyva  lives.")


def test_word_level_segmentation(dd, tok):
    name = dd["people"][0]["name"]
    assert len(_ids(tok, name)) == 3
    # Same three tokens at the start of a text and after a space.
    assert len(_ids(tok, " " + name)) == 3 and _ids(tok, " " + name) == _ids(tok, name)
    date = dd["people"][0]["birth_date"]
    month, day, year = date.replace(",", "").split()
    assert tok.convert_ids_to_tokens(_ids(tok, " " + date)) == ["\u2581" + month, "\u2581" + day, ",", "\u2581" + year]


def test_decoding_round_trip(dd, tok):
    for text in _col(dd["bios"], "text")[:50]:
        assert tok.decode(_ids(tok, text)) == text
    for row in dd["task0_train"].select(range(60)):
        full = row["prompt"] + row["answer"]
        assert tok.decode(_ids(tok, full)) == full
        assert tok.decode(_ids(tok, row["prompt"])) == row["prompt"], "the '\\n' before 'Answer:' survives"
        # A decoded answer alone loses only its leading space (it starts the text).
        assert tok.decode(_ids(tok, row["answer"])) == row["answer"][1:]
    ids = _ids(tok, dd["bios"][0]["text"]) + [tok.eos_token_id]
    assert tok.decode(ids, skip_special_tokens=True) == dd["bios"][0]["text"]


def test_prompt_plus_answer_equals_concatenated_ids(dd, tok):
    for split in QA_SPLITS:
        prompts, answers = _col(dd[split], "prompt"), _col(dd[split], "answer")
        p_ids = tok(prompts, add_special_tokens=False)["input_ids"]
        a_ids = tok(answers, add_special_tokens=False)["input_ids"]
        full = tok([p + a for p, a in zip(prompts, answers)], add_special_tokens=False)["input_ids"]
        assert all(f == p + a for f, p, a in zip(full, p_ids, a_ids))


def test_tokenizer_is_deterministic_and_survives_save_pretrained(dd, tok, tmp_path):
    assert build_word_tokenizer(dd).get_vocab() == tok.get_vocab()
    tok.save_pretrained(str(tmp_path / "tok"))
    loaded = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    text = dd["task0_test"][0]["prompt"] + dd["task0_test"][0]["answer"]
    assert _ids(loaded, text) == _ids(tok, text)
    assert loaded.decode(_ids(loaded, text)) == text
    assert (loaded.pad_token_id, loaded.eos_token_id) == (tok.pad_token_id, tok.eos_token_id)


def test_build_word_tokenizer_rejects_non_datasets():
    with pytest.raises(TypeError, match="pass the output of make_biography"):
        build_word_tokenizer(["some text"])


def test_qa_labels_mask_prompt_and_supervise_answer_plus_eos(dd, tok, qa):
    eos = tok.eos_token_id
    assert {"input_ids", "attention_mask", "labels", "prompt_len", "prompt", "answer"} <= set(qa.column_names)
    for row in qa:
        ids, labels, pl = row["input_ids"], row["labels"], row["prompt_len"]
        answer = _ids(tok, row["answer"])
        assert ids == _ids(tok, row["prompt"]) + answer + [eos]
        assert pl == len(_ids(tok, row["prompt"]))
        assert labels[:pl] == [IGNORE_INDEX] * pl
        assert labels[pl:] == answer + [eos]
        assert row["attention_mask"] == [1] * len(ids)


def test_qa_errors(dd, tok):
    with pytest.raises(ValueError, match=r"needs \d+ tokens .* max_length=5; pass a larger max_length"):
        tokenize_qa(dd["task0_train"], tok, max_length=5)
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['prompt', 'answer'\]"):
        tokenize_qa(dd["bios"], tok)
    no_eos = copy.deepcopy(tok)
    no_eos.eos_token = None
    with pytest.raises(ValueError, match="has no eos_token; set one"):
        tokenize_qa(dd["task0_train"], no_eos)


def test_bios_labels_equal_inputs_with_eos(dd, tok):
    bios = tokenize_bios(dd["bios"].select(range(20)), tok, max_length=128)
    for row in bios:
        assert row["labels"] == row["input_ids"]
        assert row["input_ids"][-1] == tok.eos_token_id
        assert row["input_ids"][:-1] == _ids(tok, row["text"])
    with pytest.raises(ValueError, match="pass a larger max_length"):
        tokenize_bios(dd["bios"].select(range(2)), tok, max_length=10)


def test_bpe_tokenizer_answer_tokenized_separately(dd):
    # A byte-level BPE (GPT-NeoX style) trained on the data: the supervised ids must be exactly
    # tokenizer(answer) + EOS, and the prompt ids tokenizer(prompt).
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        _col(dd["bios"], "text") + _col(dd["task0_train"], "prompt"),
        trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"], show_progress=False,
                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()),
    )
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    qa = tokenize_qa(dd["task0_train"].select(range(30)), tok, max_length=128)
    for row in qa:
        pl = row["prompt_len"]
        assert row["input_ids"][:pl] == _ids(tok, row["prompt"])
        assert row["labels"][pl:] == _ids(tok, row["answer"]) + [tok.eos_token_id]
        assert tok.decode(row["input_ids"][pl:-1]) == row["answer"]


def _tiny_llama(vocab_size: int) -> transformers.PreTrainedModel:
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64)
    return transformers.LlamaForCausalLM(cfg).eval()


def test_padded_loss_equals_loss_over_unpadded_answer_tokens(qa, tok):
    # Padding must not change the loss: HF's loss on the padded batch equals cross-entropy summed
    # over each unpadded row's supervised (answer + EOS) tokens, divided by their count.
    model = _tiny_llama(len(tok))
    rows = [qa[i] for i in range(5)]
    batch = PaddingCollator(tok.pad_token_id)(rows)
    with torch.no_grad():
        padded_loss = model(**batch).loss
        total, count = torch.zeros((), dtype=torch.float64), 0
        for r in rows:
            logits = model(input_ids=torch.tensor([r["input_ids"]])).logits[0, :-1].double()
            targets = torch.tensor(r["labels"][1:])
            mask = targets != IGNORE_INDEX
            total += torch.nn.functional.cross_entropy(logits[mask], targets[mask], reduction="sum")
            count += int(mask.sum())
            assert count > 0
    # float32 forward of the same tokens with/without padding: differences are rounding only.
    torch.testing.assert_close(padded_loss.double(), total / count, rtol=1e-5, atol=1e-5)


def test_collator_works_as_trainer_data_collator_with_extra_columns(qa, tok, tmp_path):
    # remove_unused_columns=False leaves prompt/answer/person_id... in the rows: the collator drops them.
    model = _tiny_llama(len(tok)).train()
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-3,
        remove_unused_columns=False, report_to=[], save_strategy="no", use_cpu=True, logging_steps=1,
        disable_tqdm=True,
    )
    collator = PaddingCollator(tok.pad_token_id)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=qa, data_collator=collator)
    result = trainer.train()
    assert result.global_step == 2
    assert torch.isfinite(torch.tensor(result.training_loss))
