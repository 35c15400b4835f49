"""Checks every peft_memory tuner must pass, in the shape of peft's ``tests/testing_common.py``: one mixin of
``_test_*`` methods, driven over a ``TEST_CASES`` matrix by ``test_tuners.py``. Method-specific behaviour is tested
beside each method (test_soft_mask.py, test_dual_prompt.py, test_memory_token.py)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from conftest import last_hidden, make_inputs, make_model
from peft import PeftConfig, PeftModel, get_peft_model

import peft_memory  # noqa: F401  (registers the peft types)

#: Tolerance of "the same computation batched differently" (per-sample routing vs each adapter alone): fp32
#: rounding of different matmul shapes, measured <= 3e-6 (docs/design.md).
ROUTING_ATOL = 1e-5


@dataclass(frozen=True)
class MethodCase:
    """One method configuration of the matrix.

    Attributes:
        name: test id.
        config_cls: the method's config class.
        adapters: config kwargs of the two adapters ``t0`` (3 classes) and ``t1`` (2 classes); they must make the
            adapters differ from the base model (random masks, prompts, memory).
        identity_at_init: with ``identity_kwargs`` the adapted backbone equals the base model bit for bit
            (soft masks at 1; memory tokens, whose masks keep the original tokens' rows untouched).
        identity_kwargs: the config kwargs of that identity adapter.
    """

    name: str
    config_cls: type
    adapters: tuple[dict, dict]
    identity_at_init: bool = False
    identity_kwargs: dict = field(default_factory=dict)

    def config(self, index: int) -> PeftConfig:
        return self.config_cls(**self.adapters[index])


def two_adapters(case: MethodCase, kind: str, attn: str):
    """``t0`` then ``t1`` of ``case`` on a tiny ``kind`` model, in eval mode."""
    model = get_peft_model(make_model(kind, attn), case.config(0), adapter_name="t0")
    model.add_adapter("t1", case.config(1))
    return model.eval()


def _output(out) -> torch.Tensor:
    return out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state


class PeftMemoryTester:
    """The shared checks; each takes ``(case, kind, attn)`` and builds its own tiny model."""

    def _test_identity_at_init(self, case, kind, attn):
        if not case.identity_at_init:
            return
        base = make_model(kind, attn)
        inputs = make_inputs(kind)
        model = get_peft_model(copy.deepcopy(base), case.config_cls(**case.identity_kwargs), adapter_name="t0")
        model.add_adapter("t1", case.config_cls(**case.identity_kwargs, num_labels=2))
        model.set_adapter("t1")
        with torch.no_grad():
            assert torch.equal(last_hidden(model, inputs), last_hidden(base, inputs))

    def _test_disabled_is_base(self, case, kind, attn):
        base = make_model(kind, attn)
        inputs = make_inputs(kind)
        model = two_adapters(case, kind, attn)
        with torch.no_grad():
            ref = last_hidden(base, inputs)
            with model.base_model.adapters_disabled():
                assert torch.equal(last_hidden(model, inputs), ref)
                if kind.endswith("_cls"):  # the base classifier's own logits come back too
                    assert torch.equal(model(**inputs).logits, base(**inputs).logits)
            model.set_adapter("t1")
            assert not torch.equal(_output(model(**inputs)), _output(base(**inputs)))  # the adapter is live

    def _test_routing_equals_alone(self, case, kind, attn):
        model = two_adapters(case, kind, attn)
        inputs = make_inputs(kind, batch=5)
        names = ["t0", "t1", "t1", "t0", "t1"]
        with torch.no_grad():
            mixed = model(**inputs, adapter_names=names).logits
            assert mixed.shape == (5, 3)
            for name, width in (("t0", 3), ("t1", 2)):
                model.set_adapter(name)
                alone = model(**inputs).logits
                rows = [i for i, n in enumerate(names) if n == name]
                torch.testing.assert_close(mixed[rows, :width], alone[rows], rtol=0, atol=ROUTING_ATOL)
        assert (mixed[[1, 2, 4], 2] == torch.finfo(mixed.dtype).min).all()  # padding beyond t1's two classes

    def _test_only_the_active_adapter_trains(self, case, kind, attn):
        model = two_adapters(case, kind, attn).train()
        model.set_adapter("t1")
        model(**make_inputs(kind)).logits.sum().backward()
        with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        assert any("head.t1" in n for n in with_grad), with_grad
        assert all(".t1." in n or n.endswith(".t1") for n in with_grad), with_grad
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        assert trainable and all(".t1." in n or n.endswith(".t1") for n in trainable), trainable

    def _test_save_load_round_trip(self, case, kind, attn, tmp_path):
        model = two_adapters(case, kind, attn)
        inputs = make_inputs(kind)
        with torch.no_grad():
            expected = {n: model(**inputs, adapter_names=[n] * 4).logits for n in ("t0", "t1")}
        model.save_pretrained(tmp_path)
        assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["t0", "t1"]
        config = PeftConfig.from_pretrained(tmp_path, subfolder="t1")
        assert type(config) is case.config_cls and config.num_labels == 2
        # any subset loads, in any order: t1 alone first, then t0
        loaded = PeftModel.from_pretrained(make_model(kind, attn), tmp_path / "t1", adapter_name="t1").eval()
        loaded.load_adapter(tmp_path / "t0", adapter_name="t0")
        with torch.no_grad():
            for name in ("t0", "t1"):
                assert torch.equal(loaded(**inputs, adapter_names=[name] * 4).logits, expected[name])
