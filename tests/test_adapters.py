"""fastfreeze.adapters: a PeftModel is split on its base model, and adapters inside the frozen prefix are refused with the fix."""
from __future__ import annotations

import pytest

peft = pytest.importorskip("peft")

from datasets import Dataset  # noqa: E402
from peft import PromptTuningConfig, get_peft_model  # noqa: E402

from fastfreeze import FreezeConfig, FreezeConfigError  # noqa: E402
from fastfreeze.adapters import prefix_adapter_modules  # noqa: E402
from fastfreeze.integrations.peft import suffix_lora_kwargs  # noqa: E402
from tests._helpers import lora_model, make_model, make_rows, pad_collator  # noqa: E402
from tests.parity.harness import FFTrainer, training_args  # noqa: E402

K = 2


@pytest.mark.parametrize("case", ["lora_all_layers", "embed_modules_to_save", "prompt_tuning"])
def test_prefix_adapters_refused(case, tmp_path):
    if case == "lora_all_layers":
        model, match = lora_model(suffix_only=False), r"model\.layers\.0\.self_attn\.q_proj"
    elif case == "embed_modules_to_save":
        model, match = lora_model(modules_to_save=["embed_tokens"]), r"model\.embed_tokens"
    else:
        model = get_peft_model(make_model("llama"), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=2))
        match = "prompt-learning"
    with pytest.raises(FreezeConfigError, match=match):
        FFTrainer(model=model, args=training_args(str(tmp_path)), train_dataset=Dataset.from_list(make_rows(4)),
                  data_collator=pad_collator(), freeze_config=FreezeConfig(num_frozen_layers=K))


def test_prefix_adapter_modules_lists_only_prefix():
    model = lora_model(suffix_only=False)
    found = prefix_adapter_modules(model.get_base_model(), K)
    assert found and all(".layers.0." in n or ".layers.1." in n for n in found)
    assert prefix_adapter_modules(lora_model().get_base_model(), K) == []
    with pytest.raises(FreezeConfigError, match="no suffix block"):
        suffix_lora_kwargs(make_model("llama"), 4)
