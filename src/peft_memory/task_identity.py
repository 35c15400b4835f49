"""Task-identity inference: which task adapter should handle each test sample.

Gradient-ID is SupSup's one-shot entropy-gradient rule (Wortsman et al. 2020, Sec. 3.3, ``se_oneshot_minimization``)
as used by Soft-TransFormers (Kang et al., Sec. 4): superpose the ``T`` task adapters with ``alpha_t = 1/T``, take the
entropy ``H`` of the softmax over the superposed model's outputs, and pick ``argmax_t (-dH/d alpha_t)``.

Output the entropy is taken over: each task adapter has its own head, and the concatenation of the ``T`` heads is the
classifier over every class seen so far, the reference code's single classifier. We take the entropy over all of
those logits (the reference code keeps the top ``C/T``; ``top_k`` does the same).

Per-sample (default): every sample gets its own row of alphas. ``W * sum_t alpha_t M_t`` is linear in alpha, so all
rows fit in one batched forward and one backward (no loop over samples); samples do not interact, so the gradient
for row ``b`` is exactly what sample ``b`` alone would give. Every row holds ``1/T``, so each masked layer runs one
matmul with the mean masked weight and forms the per-sample gradients ``<sum_s g_s^T x_s, W * M_t>`` in the backward
(``SharedSuperposition``): the superposed forward costs about one plain forward, not ``T`` matmuls per masked layer. Batch-wise (the reference evaluation, ``per_sample=False``)
uses the first ``num_shots`` samples and one id for the whole batch: it leaks task identity whenever a test batch
holds a single task (google-research/l2p issue #28), so results computed that way must be labelled as such.
"""

from __future__ import annotations

import torch


def batch_majority(task: torch.Tensor) -> torch.Tensor:
    """Batch-wise inference (the reference code's): every sample gets the batch's most frequent task id, ``(batch,)``.
    Results computed this way must be labelled batch-wise."""
    return torch.full_like(task, int(task.mode().values))


def check_candidates(loaded, inputs: dict, adapter_names, rule: str) -> None:
    """Validate a task-identity call: ``adapter_names`` a non-empty list of distinct loaded adapters (``loaded``:
    their names; ``None`` skips that check), ``inputs`` a non-empty batch.

    Raises:
        ValueError: naming the problem and the fix.
    """
    if isinstance(adapter_names, str):
        raise ValueError(f"adapter_names={adapter_names!r} is a str; {rule} takes the list of candidate task adapters.")
    if not adapter_names:
        raise ValueError(f"adapter_names is empty: {rule} needs at least one task adapter.")
    repeated = sorted({n for n in adapter_names if list(adapter_names).count(n) > 1})
    if repeated:
        raise ValueError(f"adapter_names lists {repeated} more than once; {rule} picks among distinct task adapters.")
    unknown = sorted(set(adapter_names) - set(loaded)) if loaded is not None else []
    if unknown:
        raise ValueError(f"adapter_names contains unknown adapters {unknown}; loaded: {sorted(loaded)}.")
    tensors = [v for v in inputs.values() if isinstance(v, torch.Tensor)]
    if not tensors or tensors[0].shape[0] == 0:
        raise ValueError(f"the batch is empty: {rule} needs at least one sample.")


def check_scores(scores: torch.Tensor, rule: str) -> None:
    """Raise ``ValueError`` naming the samples whose ``(batch, T)`` task scores are NaN or infinite (NaN or inf in
    the inputs): an argmax would silently pick task 0 for them."""
    bad = (~torch.isfinite(scores)).any(dim=-1).nonzero().flatten().tolist()
    if bad:
        raise ValueError(f"{rule}: samples {bad[:10]} get non-finite task scores; check the inputs for NaN or "
                         "infinite values.")


def gradient_id(
    model,
    inputs: dict[str, torch.Tensor],
    adapter_names: list[str],
    *,
    per_sample: bool = True,
    num_shots: int | None = None,
    top_k: int | None = None,
) -> torch.Tensor:
    """Infer the task adapter of each sample by Gradient-ID.

    Args:
        model: a ``PeftModel`` whose tuner is a peft_memory tuner with task heads.
        inputs: the model inputs by keyword (``input_ids``/``attention_mask`` or ``pixel_values``), batch ``B``.
        adapter_names: the ``T`` candidate task adapters, in task order.
        per_sample: ``True`` (default): one task per sample. ``False``: one task for the whole batch (batch-wise
            inference of the reference code; label results as batch-wise).
        num_shots: batch-wise only: how many samples of the batch to use (reference code: 7; default: all).
        top_k: if set, the entropy is taken over the ``top_k`` largest logits only (reference code: ``C / T``).

    Returns:
        ``LongTensor`` of shape ``(B,)``: indices into ``adapter_names``.

    Raises:
        ValueError: if ``adapter_names`` is empty, a str, repeats or names an adapter that is not loaded, if the
            batch is empty or its task scores are not finite (NaN in the inputs), or if an adapter has no task head.
    """
    check_candidates(model.peft_config, inputs, adapter_names, "Gradient-ID")
    tuner = model.base_model
    batch = next(v for v in inputs.values() if isinstance(v, torch.Tensor)).shape[0]
    num_tasks = len(adapter_names)
    if num_tasks == 1:
        return torch.zeros(batch, dtype=torch.long)
    device = next(model.parameters()).device
    if not per_sample and num_shots is not None:
        inputs = {k: v[:num_shots] if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    rows = next(v for v in inputs.values() if isinstance(v, torch.Tensor)).shape[0]
    alphas = torch.full((rows if per_sample else 1, num_tasks), 1.0 / num_tasks, device=device, requires_grad=True)
    with torch.enable_grad(), tuner.superposition(adapter_names, alphas.expand(rows, num_tasks)):
        logits = model(**inputs).logits.float()
        if top_k is not None:
            logits = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values
        log_p = logits.log_softmax(dim=-1)
        entropy = -(log_p.exp() * log_p).sum(dim=-1)  # (rows,)
        (grad,) = torch.autograd.grad(entropy.sum(), alphas)
    check_scores(grad, "Gradient-ID")
    task = (-grad).argmax(dim=-1)
    return task.cpu() if per_sample else task.cpu().expand(batch).clone()


def prompt_id(model, inputs: dict[str, torch.Tensor], adapter_names: list[str], *, per_sample: bool = True,
              features: torch.Tensor | None = None, keys=None) -> torch.Tensor:
    """Infer the task adapter of each sample by DualPrompt's key matching (Prompt-ID; Wang et al. 2022, Sec. 4.3).

    The query is the frozen model's pre-logits feature (one forward with adapters disabled, or ``features`` if
    given, ``(batch, hidden)``); the adapter whose key has the largest cosine similarity wins. The keys are the
    adapters' own (DualPrompt, DualPrompt-Soft-TF) or, for adapters without keys such as PEFT's LoRA, a
    :class:`peft_memory.TaskKeys` passed as ``keys``.

    Returns:
        ``LongTensor`` ``(batch,)`` of indices into ``adapter_names``; with ``per_sample=False`` the majority vote of
        the batch for every sample (the reference code's batch-wise inference: label results as such).

    Raises:
        ValueError: if ``adapter_names`` is empty, a str, repeats or names an unknown adapter, if the batch is
            empty, or if the similarities are not finite (NaN in the inputs).
    """
    source = model.base_model if keys is None else keys
    loaded = getattr(model, "peft_config", None) if keys is None else getattr(keys, "keys", None)
    check_candidates(loaded, inputs, adapter_names, "Prompt-ID")
    if features is None:
        features = source.frozen_features(model, inputs)
    similarity = source.key_similarity(features, adapter_names)
    check_scores(similarity, "Prompt-ID")
    task = similarity.argmax(dim=-1).cpu()
    return task if per_sample else batch_majority(task)
