"""The layers no adapter touches, computed once per batch (peft_memory/continual/inference/prefix.py): which depth
each kind of adapter allows, and outputs bit-identical to full forwards."""

import copy

import pytest
import torch
from conftest import make_inputs, make_model
from peft import LoraConfig, get_peft_model

import peft_memory  # noqa: F401
from peft_memory import DualPromptConfig, MemoryTokenConfig, SoftMaskConfig, frozen_query
from peft_memory.continual.inference.outputs import OutputCache, routed_outputs
from peft_memory.continual.inference.prefix import SharedPrefix, untouched_depth
from peft_memory.families import encoder_layers, get_family
from peft_memory.task_keys import adapter_query


@pytest.mark.parametrize("config,depth", [
    (SoftMaskConfig(num_labels=2), 1),  # the last three of the tiny models' four layers
    (SoftMaskConfig(num_labels=2, layers_to_transform=[3]), 3),
    (SoftMaskConfig(num_labels=2, target_modules=[]), 4),  # head only: the whole encoder is shared
    (LoraConfig(target_modules=["query", "value"], layers_to_transform=[2, 3], layers_pattern="layer"), 2),
    (SoftMaskConfig(num_labels=2, use_prompts=True, g_prompt_layers=[2], e_prompt_layers=[3]), 0),  # prompts
    (DualPromptConfig(num_labels=2, g_prompt_layers=[2], e_prompt_layers=[3]), 0),
    (MemoryTokenConfig(num_labels=2), 0),
    (SoftMaskConfig(num_labels=2, target_modules=[], modules_to_save=["bert"]), 0),  # full fine-tuning's copy
])
def test_the_shared_depth_of_each_kind_of_adapter(config, depth):
    model = get_peft_model(make_model("bert_cls"), config, adapter_name="t0")
    assert untouched_depth(model) == depth and SharedPrefix(model).depth == depth


def test_a_second_adapter_lowers_the_depth_to_the_lowest_touched_layer():
    model = get_peft_model(make_model("bert_cls"), SoftMaskConfig(num_labels=2, layers_to_transform=[3]), "t0")
    model.add_adapter("t1", SoftMaskConfig(num_labels=2, layers_to_transform=[1, 3]))
    assert untouched_depth(model) == 1


@pytest.mark.parametrize("kind", ["bert_cls", "vit_cls"])
def test_shared_forwards_are_bit_identical_and_run_the_prefix_once(kind):
    model = get_peft_model(make_model(kind), SoftMaskConfig(num_labels=3, layers_to_transform=[2, 3],
                                                             init_weights=False), "t0")
    for name in ("t1", "t2"):
        model.add_adapter(name, SoftMaskConfig(num_labels=3, layers_to_transform=[2, 3], init_weights=False))
    model.eval()
    inputs = make_inputs(kind, batch=6)
    pooling = "mean" if kind.startswith("bert") else "classifier"
    mixed, rows = ["t0", "t1", "t2", "t0", "t1", "t2"], torch.tensor([1, 4, 5])

    def calls():
        with torch.no_grad():
            sub = {k: v[rows] for k, v in inputs.items()}
            return [frozen_query(model, inputs, pooling=pooling), adapter_query(model, inputs, "t1", pooling=pooling),
                    *routed_outputs(model, inputs, mixed), routed_outputs(model, sub, ["t2", "t0", "t1"])[0]]

    plain = calls()
    shared = SharedPrefix(model)
    assert shared.depth == 2
    base = model.get_base_model()
    layer0 = encoder_layers(base, get_family(base))[0]
    ran = []  # layer 0's attention runs only when the layer is computed, not replayed
    handle = layer0.get_submodule(get_family(base).attention).register_forward_hook(lambda *a: ran.append(1))
    with shared.batch(), torch.no_grad():
        sub = {k: v[rows] for k, v in inputs.items()}
        replayed = [frozen_query(model, inputs, pooling=pooling), adapter_query(model, inputs, "t1", pooling=pooling),
                    *routed_outputs(model, inputs, mixed)]
        with shared.rows(rows):
            replayed.append(routed_outputs(model, sub, ["t2", "t0", "t1"])[0])
    handle.remove()
    # every full-batch forward bit for bit; the subset of rows up to float rounding (its unshared layers ran on
    # 3 rows instead of 6, and the kernels may differ with the number of rows)
    assert all(torch.equal(a, b) for a, b in zip(plain[:4], replayed[:4]))
    torch.testing.assert_close(plain[4], replayed[4], rtol=1e-6, atol=1e-6)
    assert len(ran) == 1  # the first forward ran layer 0; the other four replayed the shared layers
    assert "forward" not in layer0.__dict__  # the layers are theirs again
    assert all(torch.equal(a, b) for a, b in zip(plain, calls()))  # nothing left behind


def test_other_inputs_or_a_gradient_compute_everything():
    model = get_peft_model(make_model("bert_cls"), SoftMaskConfig(num_labels=3, init_weights=False), "t0").eval()
    inputs, other = make_inputs("bert_cls", batch=4), make_inputs("bert_cls", batch=3, seed=7)
    shared = SharedPrefix(model)
    with shared.batch():
        with torch.no_grad():
            frozen_query(model, inputs, pooling="mean")
            assert torch.equal(frozen_query(model, other, pooling="mean"),
                               frozen_query(copy.deepcopy(model), other, pooling="mean"))  # 3 rows: not the record's
        logits = model(**inputs).logits  # with gradient: a full forward, which the backward can go through
        logits.sum().backward()
    assert any(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_the_output_cache_runs_each_pair_once_and_a_single_row_with_a_neighbour():
    model = get_peft_model(make_model("bert_cls"), SoftMaskConfig(num_labels=3, init_weights=False), "t0")
    model.add_adapter("t1", SoftMaskConfig(num_labels=3, init_weights=False))
    model.eval()
    inputs = make_inputs("bert_cls", batch=5)
    cache, forwards = OutputCache(), []
    handle = model.register_forward_hook(lambda m, a, k, out: forwards.append(k["input_ids"].shape[0]),
                                         with_kwargs=True)
    full = cache.outputs(model, inputs, "b0", ["t0"] * 5)
    again = cache.outputs(model, inputs, "b0", ["t0"] * 5)
    one = cache.outputs(model, inputs, "b0", ["t1"], rows=torch.tensor([2]))
    handle.remove()
    assert forwards == [5, 2]  # the repeat ran nothing; row 2 under t1 ran with row 3
    assert torch.equal(full[0], again[0]) and torch.equal(full[1], again[1])
    with torch.no_grad():
        ref = routed_outputs(model, inputs, ["t1"] * 5)
    torch.testing.assert_close(one[0], ref[0][2:3], rtol=1e-6, atol=1e-6)  # 2 rows against 5: float rounding
    torch.testing.assert_close(one[1], ref[1][2:3], rtol=1e-6, atol=1e-6)


def test_the_output_cache_mixes_heads_of_different_widths():
    """Adapters whose heads differ in width (a 4-class task, a 2-class one): each cached under forwards routed
    alone and mixed, then asked for together. Every row's first ``width`` logits equal a forward routed under its
    adapter alone; the columns beyond are the dtype's most negative value, as a mixed routed forward pads them."""
    model = get_peft_model(make_model("bert_cls"), SoftMaskConfig(num_labels=4, init_weights=False), "wide")
    model.add_adapter("narrow", SoftMaskConfig(num_labels=2, init_weights=False))
    model.eval()
    inputs = make_inputs("bert_cls", batch=4)
    cache = OutputCache()
    cache.outputs(model, inputs, "b0", ["narrow"] * 4)  # stored 2 wide
    names = ["wide", "narrow", "wide", "narrow"]
    logits, features = cache.outputs(model, inputs, "b0", names)  # wide runs now, 4 wide
    assert logits.shape == (4, 4) and features.shape[0] == 4
    with torch.no_grad():
        alone = {a: routed_outputs(model, inputs, [a] * 4)[0] for a in ("wide", "narrow")}
    for r, a in enumerate(names):
        width = alone[a].shape[1]
        torch.testing.assert_close(logits[r, :width], alone[a][r], rtol=1e-6, atol=1e-6)
        assert (logits[r, width:] == torch.finfo(logits.dtype).min).all()
    cache.outputs(model, inputs, "b1", ["wide", "narrow", "narrow", "narrow"])  # narrow stored 4 wide here
    narrow = cache.outputs(model, inputs, "b1", ["narrow"] * 4)[0]
    torch.testing.assert_close(narrow[:, :2], alone["narrow"], rtol=1e-6, atol=1e-6)
