"""The suggest-k probe: a few optimizer steps on the new task with each depth frozen, and what they do.

From a model that has learned the old task, `run_probe` trains a fresh copy for `steps` steps on the
new task's training rows once with nothing frozen (the SEQ reference) and once per k = 0..L with the
input embedding + bottom k blocks frozen (`fastfreeze.freeze_bottom_layers`, plain requires_grad=False:
the contract's reference semantics), every copy on the same batches in the same order. After each
probe it scores the old task (first-token accuracy and exact match, teacher-forced) and the new task
(mean answer-token loss on a fixed subset of its training rows). The SEQ probe also gives the
per-layer update sizes and the principal angles between its update and the old task's update
(`fastfreeze.lab.continual.diagnostics.update_orthogonality`, when the checkpoint before the old task is given).
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch

from fastfreeze.freeze import freeze_bottom_layers
from fastfreeze.lab.continual.diagnostics import snapshot, update_orthogonality
from fastfreeze.lab.continual.evaluate import EvalSet, evaluate
from fastfreeze.lab.continual.paper_sets import block_index


@dataclass
class ProbeSettings:
    """How long and how hard the probe trains. Usage: `ProbeSettings(steps=50, learning_rate=3e-4)`."""

    steps: int = 50
    learning_rate: float = 3e-4
    batch_size: int = 32
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0  # the HF Trainer's default clipping, which the runner's training uses
    seed: int = 0
    eval_examples: int | None = 600  # rows scored per task (a seeded subset); None = all
    eval_batch_size: int = 256
    energy: float = 0.99  # subspace energy for the orthogonality angles (as `fastfreeze orthogonality`)

    def check(self) -> None:
        """Raise ValueError naming the bad field."""
        for name in ("steps", "batch_size", "eval_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.eval_examples is not None and self.eval_examples < 1:
            raise ValueError(f"eval_examples must be >= 1 or None, got {self.eval_examples}")
        if not 0 < self.energy <= 1:
            raise ValueError(f"energy must be in (0, 1], got {self.energy}")


def group_of(name: str, embedding_names: set[str]) -> str:
    """Which row of the per-layer table a parameter belongs to: "emb", the block index ("0", "1", ...) or "head"."""
    if name in embedding_names:
        return "emb"
    block = block_index(name)
    return "head" if block is None else str(block)


def _group_order(groups) -> list[str]:
    return sorted(groups, key=lambda g: (-1 if g == "emb" else 10**9 if g == "head" else int(g)))


def relative_update_sizes(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor],
                          embedding_names: set[str]) -> dict[str, float]:
    """Per group, ||after - before||_F / ||before||_F over all of the group's parameters (0.0 = did not move)."""
    num: dict[str, float] = {}
    den: dict[str, float] = {}
    for n, w in before.items():
        g = group_of(n, embedding_names)
        num[g] = num.get(g, 0.0) + float((after[n].double() - w.double()).pow(2).sum())
        den[g] = den.get(g, 0.0) + float(w.double().pow(2).sum())
    return {g: (num[g] ** 0.5) / max(den[g] ** 0.5, 1e-30) for g in _group_order(num)}


def update_cosines(w0: dict[str, torch.Tensor], w1: dict[str, torch.Tensor], w2: dict[str, torch.Tensor],
                   embedding_names: set[str]) -> dict[str, float | None]:
    """Per group, the cosine between the flattened updates w1 - w0 and w2 - w1 (signed: < 0 means the second
    update partly undoes the first; None when either did not move)."""
    dot: dict[str, float] = {}
    n1: dict[str, float] = {}
    n2: dict[str, float] = {}
    for n, a in w0.items():
        g = group_of(n, embedding_names)
        d1, d2 = (w1[n].double() - a.double()).flatten(), (w2[n].double() - w1[n].double()).flatten()
        dot[g] = dot.get(g, 0.0) + float(d1 @ d2)
        n1[g] = n1.get(g, 0.0) + float(d1 @ d1)
        n2[g] = n2.get(g, 0.0) + float(d2 @ d2)
    return {g: (dot[g] / (n1[g] * n2[g]) ** 0.5 if n1[g] > 0 and n2[g] > 0 else None) for g in _group_order(dot)}


def _params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().float().cpu().clone() for n, p in model.named_parameters()}


def _embedding_names(model) -> set[str]:
    emb = {id(p) for p in model.get_input_embeddings().parameters()}
    return {n for n, p in model.named_parameters() if id(p) in emb}


def _batches(dataset, collator, settings: ProbeSettings):
    """`settings.steps` batches in one seeded order (reshuffled each epoch), the same for every probe."""
    g = torch.Generator().manual_seed(settings.seed)
    order: list[int] = []
    out = []
    for _ in range(settings.steps):
        if len(order) < settings.batch_size:
            order += torch.randperm(len(dataset), generator=g).tolist()
        idx, order = order[: settings.batch_size], order[settings.batch_size:]
        out.append(collator([dataset[i] for i in idx]))
    return out


def train_probe(model, batches, settings: ProbeSettings) -> list[float]:
    """Plain AdamW steps (the Trainer's defaults: constant rate, gradient norm clipped at `max_grad_norm`) on
    `batches` over the parameters that require grad; returns the losses.

    Usage: `train_probe(model, _batches(ds, collator, s), s)`. Frozen parameters are outside the
    optimizer, so weight decay cannot move them either.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    device = next(model.parameters()).device
    model.train()
    losses = []
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "labels")}
        loss = model(**batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if settings.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


@torch.no_grad()
def answer_loss(model, evalset: EvalSet, batch_size: int = 256) -> float:
    """Mean cross-entropy over every supervised (answer + EOS) token of `evalset`, teacher-forced."""
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for ids, mask, labels in evalset.batches(batch_size, device):
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        target = labels[:, 1:]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                                 ignore_index=-100, reduction="sum")
        total += float(loss)
        count += int((target != -100).sum())
    return total / max(count, 1)


def probe_arm(base, k: int | None, batches, old_set: EvalSet, new_set: EvalSet, settings: ProbeSettings):
    """Probe one depth: a copy of `base` with the embedding + bottom `k` blocks frozen (None: nothing), trained
    on `batches`, then scored. Returns (record, trained copy). The record says whether every frozen tensor is
    bitwise unchanged (`frozen_unchanged`). Usage: `rec, m = probe_arm(model, 2, batches, old, new, s)`."""
    model = copy.deepcopy(base)
    if k is not None:
        freeze_bottom_layers(model, k)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    losses = train_probe(model, batches, settings)
    old = evaluate(model, old_set, settings.eval_batch_size)
    new = evaluate(model, new_set, settings.eval_batch_size)
    params = dict(model.named_parameters())
    record = {
        "k": k,
        "label": "none (SEQ)" if k is None else ("embedding only" if k == 0 else f"embedding + {k}"),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "old_first_token": old["first_token"],
        "old_exact_match": old["exact_match"],
        "new_first_token": new["first_token"],
        "new_loss": answer_loss(model, new_set, settings.eval_batch_size),
        "probe_loss_first": losses[0],
        "probe_loss_last": losses[-1],
        "frozen_unchanged": all(torch.equal(params[n].detach(), w) for n, w in frozen.items()),
    }
    return record, model


def _per_layer(base_params, seq_params, prev_params, embedding_names, orth_rows) -> list[dict]:
    """One row per group: the old task's and the probe's relative update sizes, the cosine of the two flattened
    updates, and their mean principal cosine (with its random baseline)."""
    new_sizes = relative_update_sizes(base_params, seq_params, embedding_names)
    old_sizes = relative_update_sizes(prev_params, base_params, embedding_names) if prev_params else {}
    flat = update_cosines(prev_params, base_params, seq_params, embedding_names) if prev_params else {}
    cos: dict[str, list[tuple[float, float]]] = {}
    for r in orth_rows or []:
        if not r["frozen"]:
            cos.setdefault(r["layer"], []).append((r["mean_cos"], r["random_cos"]))
    rows = []
    for g, size in new_sizes.items():
        pairs = cos.get(g)
        mean_cos = sum(c for c, _ in pairs) / len(pairs) if pairs else None
        rand = sum(b for _, b in pairs) / len(pairs) if pairs else None
        rows.append({"layer": g, "old_update": old_sizes.get(g), "new_update": size, "flat_cos": flat.get(g),
                     "mean_cos": mean_cos,
                     "random_cos": rand, "cos_over_random": (mean_cos / rand) if pairs and rand else None})
    return rows


def run_probe(base, previous, new_train, old_eval, new_eval, collator, settings: ProbeSettings,
              log=print) -> dict:
    """The whole probe: SEQ reference + every k = 0..L. Returns {"settings", "old_before", "new_loss_before",
    "arms": [...], "per_layer": [...]}. `previous` (the model before the old task, or None) gives the old
    task's update for the orthogonality columns. `new_train` is a tokenized dataset (rows for the collator);
    `old_eval`/`new_eval` are EvalSets. Usage: `run_probe(model, prev, ds, EvalSet(..), EvalSet(..), coll, s)`."""
    settings.check()
    num_layers = int(base.config.num_hidden_layers)
    batches = _batches(new_train, collator, settings)
    base.eval()
    before = evaluate(base, old_eval, settings.eval_batch_size)
    new_loss_before = answer_loss(base, new_eval, settings.eval_batch_size)
    arms, seq_model = [], None
    for k in [None, *range(num_layers + 1)]:
        rec, model = probe_arm(base, k, batches, old_eval, new_eval, settings)
        log(f"[suggest-k] probe {rec['label']}: old first-token {rec['old_first_token']:.3f}, "
            f"new-task loss {rec['new_loss']:.3f}")
        arms.append(rec)
        if k is None:
            seq_model = model
    emb_names = _embedding_names(base)
    base_params, seq_params = _params(base), _params(seq_model)
    prev_params = _params(previous) if previous is not None else None
    orth = None
    if previous is not None:
        orth = update_orthogonality(snapshot(previous), snapshot(base), snapshot(seq_model), settings.energy)
    return {
        "settings": asdict(settings),
        "num_layers": num_layers,
        "old_before": {"first_token": before["first_token"], "exact_match": before["exact_match"]},
        "new_loss_before": new_loss_before,
        "arms": arms,
        "per_layer": _per_layer(base_params, seq_params, prev_params, emb_names, orth),
        "orthogonality_rows": orth,
    }
