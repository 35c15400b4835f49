"""The shared attention-injection mechanism: extra keys/values with a 4D mask, under eager and sdpa."""

import pytest
import torch
from conftest import last_hidden, make_inputs, make_model

from peft_memory.families import attention_modules, get_family
from peft_memory.tuners.attention import enable_injection, extend_mask, set_extra_kv

CASES = [(kind, attn) for kind in ("bert_cls", "vit_cls", "dinov2") for attn in ("eager", "sdpa")]
HEADS, HEAD_DIM, N_EXTRA = 4, 8, 3


def prefixes(batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, HEADS, N_EXTRA, HEAD_DIM, generator=g),
            torch.randn(batch, HEADS, N_EXTRA, HEAD_DIM, generator=g))


def capture(module, store):
    """Record projected q, k, v (batch, heads, seq, head_dim) and the attention output (batch, seq, hidden)."""
    handles = []
    names = {"query": "q", "key": "k", "value": "v", "q_proj": "q", "k_proj": "k", "v_proj": "v"}
    for name, tag in names.items():
        if hasattr(module, name):
            handles.append(getattr(module, name).register_forward_hook(
                lambda m, a, out, tag=tag: store.__setitem__(tag, out.unflatten(-1, (HEADS, HEAD_DIM)).transpose(1, 2))))
    if hasattr(module, "o_proj"):  # ViT/DINOv2 project inside the attention module: read o_proj's input
        handles.append(module.o_proj.register_forward_pre_hook(lambda m, a: store.__setitem__("out", a[0])))
    else:  # BERT's self-attention returns the context before its output projection
        handles.append(module.register_forward_hook(lambda m, a, out: store.__setitem__("out", out[0])))
    return handles


@pytest.mark.parametrize("kind,attn", CASES)
def test_prefix_attention_equals_reference_computation(kind, attn):
    model = make_model(kind, attn)
    inputs = make_inputs(kind)
    enable_injection(model)
    module = attention_modules(model, get_family(model))[1]
    pk, pv = prefixes(4)
    set_extra_kv(module, lambda m, q: (pk, pv, None))
    store = {}
    capture(module, store)
    with torch.no_grad():
        model(**inputs)
    q, k, v = store["q"], torch.cat([pk, store["k"]], 2), torch.cat([pv, store["v"]], 2)
    scores = q @ k.transpose(-1, -2) * HEAD_DIM**-0.5
    if "attention_mask" in inputs:  # BERT padding: padded keys masked, prefixes always visible
        keep = torch.cat([torch.ones(4, N_EXTRA), inputs["attention_mask"].float()], 1).bool()
        scores = scores.masked_fill(~keep[:, None, None, :], float("-inf"))
    ref = (scores.softmax(-1) @ v).transpose(1, 2).flatten(2)
    torch.testing.assert_close(store["out"], ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind,attn", CASES)
def test_without_extra_kv_the_model_is_bit_exact(kind, attn):
    base = make_model(kind, attn)
    inputs = make_inputs(kind)
    with torch.no_grad():
        ref = last_hidden(base, inputs)
        assert enable_injection(base) == f"peft_memory_{attn}"
        modules = attention_modules(base, get_family(base))
        set_extra_kv(modules[0], lambda m, q: None)  # a provider that adds nothing
        assert torch.equal(last_hidden(base, inputs), ref)
        pk, pv = prefixes(4)
        set_extra_kv(modules[0], lambda m, q: (pk, pv, None))
        assert not torch.equal(last_hidden(base, inputs), ref)
        set_extra_kv(modules[0], None)
        assert torch.equal(last_hidden(base, inputs), ref)


@pytest.mark.parametrize("kind,attn", CASES)
def test_per_sample_prefixes_equal_each_sample_alone(kind, attn):
    """Each sample carries its own prefix in one batch (no mixing of the key/value and batch axes)."""
    model = make_model(kind, attn)
    enable_injection(model)
    inputs = make_inputs(kind, batch=3)
    pk, pv = prefixes(3, seed=5)
    module = attention_modules(model, get_family(model))[2]
    rows = {}
    set_extra_kv(module, lambda m, q: (pk[rows["i"]], pv[rows["i"]], None))
    with torch.no_grad():
        rows["i"] = slice(None)
        batched = last_hidden(model, inputs)
        for i in range(3):
            rows["i"] = slice(i, i + 1)
            alone = last_hidden(model, {k: v[i : i + 1] for k, v in inputs.items()})
            torch.testing.assert_close(batched[i : i + 1], alone, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind,attn", CASES)
def test_extra_mask_rows(kind, attn):
    """Rows of the extra mask select which queries read the extra keys: at the injected layer, queries whose extra
    columns are all masked get exactly the base attention output; the one query allowed to read them does not."""
    model = make_model(kind, attn)
    inputs = make_inputs(kind)
    enable_injection(model)
    module = attention_modules(model, get_family(model))[0]
    store = {}
    capture(module, store)
    with torch.no_grad():
        model(**inputs)
        ref = store["out"]
        pk, pv = prefixes(4)
        rows = torch.zeros(1, 1, ref.shape[1], N_EXTRA, dtype=torch.bool)
        rows[..., 0, :] = True  # only the first query ([CLS]) reads the extra keys
        set_extra_kv(module, lambda m, q: (pk, pv, rows))
        model(**inputs)
    torch.testing.assert_close(store["out"][:, 1:], ref[:, 1:], rtol=0, atol=1e-6)
    assert (store["out"][:, 0] - ref[:, 0]).abs().max() > 1e-3


def test_extend_mask_conventions():
    pad = torch.tensor([[True, False]])[:, None, None, :].expand(1, 1, 2, 2)
    out = extend_mask(pad, None, 1, 2, 2, additive=False, dtype=torch.float32)
    assert out.shape == (1, 1, 2, 3) and out[0, 0, 0].tolist() == [True, True, False]
    additive = torch.zeros(1, 1, 2, 2).masked_fill(~pad, torch.finfo(torch.float32).min)
    extra = torch.tensor([[True], [False]])[None, None]
    out = extend_mask(additive, extra, 1, 2, 2, additive=True, dtype=torch.float32)
    assert out[0, 0, :, 0].tolist() == [0.0, torch.finfo(torch.float32).min]
    assert extend_mask(None, None, 1, 2, 2, additive=True, dtype=torch.float32) is None
    out = extend_mask(None, extra, 1, 2, 2, additive=True, dtype=torch.float32)
    assert out[0, 0].tolist() == [[0.0, 0.0, 0.0], [torch.finfo(torch.float32).min, 0.0, 0.0]]


@pytest.mark.parametrize("impl", ["flash_attention_2", "flex_attention"])
def test_flash_and_flex_are_refused(impl):
    model = make_model("vit")
    model.config._attn_implementation = impl
    with pytest.raises(ValueError, match=f"attn_implementation='{impl}' is not supported by peft_memory"):
        enable_injection(model)
