"""torch.compile: every method's default forward is one graph (no graph break, torch._dynamo.explain), and the
compiled model (aot_eager backend: no C++ toolchain needed) gives the eager logits and gradients."""

import copy

import pytest
import torch
import torch._dynamo
from conftest import make_inputs, make_model
from peft import get_peft_model

from peft_memory import DualPromptConfig, MemoryTokenConfig, SoftMaskConfig

PROMPTS = {"g_prompt_layers": [0], "e_prompt_layers": [1, 2], "g_prompt_length": 2, "e_prompt_length": 3}
CONFIGS = {
    "soft_mask": lambda: SoftMaskConfig(num_labels=3, init_weights=False),
    "soft_mask_prompts": lambda: SoftMaskConfig(num_labels=3, init_weights=False, use_prompts=True, **PROMPTS),
    "dual_prompt": lambda: DualPromptConfig(num_labels=3, **PROMPTS),
    "memory_token": lambda: MemoryTokenConfig(num_labels=3),
}


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("method", CONFIGS)
@pytest.mark.parametrize("kind", ["bert_cls", "vit_cls"])
@pytest.mark.parametrize("grad", [False, True], ids=["inference", "training"])
def test_default_forward_has_no_graph_break(method, kind, grad):
    model = get_peft_model(make_model(kind, "sdpa"), CONFIGS[method]()).eval()
    with torch.set_grad_enabled(grad):
        explanation = torch._dynamo.explain(model)(**make_inputs(kind))
    assert explanation.graph_break_count == 0, [str(r.reason)[:200] for r in explanation.break_reasons]


@pytest.mark.parametrize("method", CONFIGS)
def test_compiled_model_matches_eager(method):
    """With labels; DualPrompt's matching term runs the frozen model under a hook, a graph break of that term only
    (hence no ``fullgraph``)."""
    model = get_peft_model(make_model("vit_cls", "sdpa"), CONFIGS[method]()).eval()
    compiled = torch.compile(copy.deepcopy(model), backend="aot_eager")
    inputs, labels = make_inputs("vit_cls"), torch.tensor([0, 1, 2, 1])
    eager_out = model(**inputs, labels=labels)
    compiled_out = compiled(**inputs, labels=labels)
    torch.testing.assert_close(compiled_out.logits, eager_out.logits, rtol=1e-5, atol=1e-5)
    eager_out.loss.backward()
    compiled_out.loss.backward()
    eager_grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    for name, p in compiled.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, eager_grads[name.removeprefix("_orig_mod.")], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", CONFIGS)
def test_compiled_inference_does_not_recompile(method):
    """Repeated calls reuse the compiled graph (the soft masks' product cache is bypassed under compile: guards on it
    recompiled every call)."""
    model = get_peft_model(make_model("bert_cls", "sdpa"), CONFIGS[method]()).eval()
    compiled = torch.compile(model, backend="aot_eager")
    inputs = make_inputs("bert_cls")
    with torch.no_grad():
        first = compiled(**inputs).logits
        with torch._dynamo.config.patch(error_on_recompile=True):
            for _ in range(2):
                torch.testing.assert_close(compiled(**inputs).logits, first, rtol=0, atol=0)
