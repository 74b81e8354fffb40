"""ModelShape: read from config.json (class defaults filled in), parameter counts equal the real model's."""
import json

import pytest

from fastfreeze.estimate.shape import ModelShape
from tests._helpers import make_model


def test_counts_equal_the_tiny_llama_parameters(tmp_path):
    model = make_model("llama")
    model.config.save_pretrained(tmp_path)
    k = 2
    shape = ModelShape.from_config(str(tmp_path), seq=16, batch=2, dtype="float32")
    assert shape.dtype_bytes == 4 and shape.layers == model.config.num_hidden_layers
    blocks = model.model.layers
    frozen = sum(p.numel() for p in model.model.embed_tokens.parameters()) + sum(
        p.numel() for b in blocks[:k] for p in b.parameters())
    total = sum(p.numel() for p in model.parameters())
    assert shape.frozen_params(k) == frozen and shape.trainable_params(k) == total - frozen


def test_tied_embeddings_default_comes_from_the_model_class(tmp_path):
    cfg = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
           "num_hidden_layers": 4, "vocab_size": 100}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    shape = ModelShape.from_config(str(tmp_path / "config.json"), seq=8, batch=1)
    assert shape.kv_heads == 4 and shape.tied_embeddings is False and shape.dtype == "bfloat16"
    assert shape.trainable_params(4) == 64 + 100 * 64  # final norm + LM head


def test_bad_inputs_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        ModelShape.from_config("no/such-model-anywhere", seq=8, batch=1)
    shape = ModelShape.from_config({"num_hidden_layers": 2, "hidden_size": 8, "intermediate_size": 16,
                                    "num_attention_heads": 2, "vocab_size": 10}, seq=4, batch=1)
    with pytest.raises(ValueError, match="outside 0..2"):
        shape.trainable_params(3)
