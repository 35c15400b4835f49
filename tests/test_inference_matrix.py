"""Every method x inference setting, generated from the declaration (peft_memory/continual/inference/declaration.py),
in the shape of PEFT's ``TEST_CASES``: each valid setting runs a 2-task tiny run end to end (train, save,
re-evaluate, reload, verify), each invalid one is refused with its reason before anything loads.

``EXPECTED`` writes the valid settings out by hand: a declaration changed by mistake (a capability a method does not
have, a rule's need dropped) changes the generated matrix and fails here, before a run does."""


import pytest

import peft_memory  # noqa: F401
from peft_memory.continual import METHODS, ContinualArguments, RunResults
from peft_memory.continual.cli import main
from peft_memory.continual.inference.declaration import CIL_RULES, TASK_ID_RULES, Inference, valid_settings
from peft_memory.continual.run import launch
from peft_memory.continual.run.launch import build_trainer, evaluate_run
from peft_memory.continual.run.reference import load_run, verify_run
from peft_memory.continual.run.spec import RunSpec


def _settings(spec: str) -> set[str]:
    return set(spec.split())


#: The valid per-sample settings of each method, ``mode+rule`` with ``+fs`` for first-session adaptation.
_TASK_HEADS = ("max_logit+routed max_logit+unified nearest_mean+routed nearest_mean+unified gaussian+routed "
               "gaussian+unified gaussian+combined gaussian+product")
_GRADIENT_ID = "gradient_id+routed gradient_id+unified"  # superposed masks or prompts (head-only has neither)
_FIRST = "nearest_mean+routed+fs nearest_mean+unified+fs gaussian+routed+fs gaussian+unified+fs " \
         "gaussian+combined+fs gaussian+product+fs"
_JOINT = "max_logit+unified nearest_mean+unified nearest_mean+unified+fs gaussian+unified gaussian+unified+fs"
EXPECTED = {
    "soft_mask": _settings(f"{_TASK_HEADS} {_GRADIENT_ID} {_FIRST}"),
    "head_only": _settings(_TASK_HEADS),
    "dual_prompt": _settings(f"{_TASK_HEADS} {_GRADIENT_ID} {_FIRST} prompt_id+routed prompt_id+unified"),
    "soft_mask_prompts": _settings(f"{_TASK_HEADS} {_GRADIENT_ID} {_FIRST} prompt_id+routed prompt_id+unified"),
    "lora": _settings("prompt_id+routed max_logit+routed nearest_mean+routed gaussian+routed gaussian+combined "
                      "gaussian+product nearest_mean+routed+fs gaussian+routed+fs gaussian+combined+fs "
                      "gaussian+product+fs"),
    "memory_token": _settings("max_softmax+routed max_logit+routed nearest_mean+routed gaussian+routed"),
    "simple_cil": _settings("nearest_mean+unified gaussian+unified nearest_mean+unified+fs gaussian+unified+fs"),
    "ranpac": _settings("ridge+unified ridge+unified+fs"),
    "joint": _settings(_JOINT),
    "joint_full": _settings(_JOINT),
}


def _name(s: Inference) -> str:
    return f"{s.task_id_mode}+{s.cil_rule}" + ("+fs" if s.first_session_adaptation else "")


def _id(value) -> str:
    """Test ids that ``-k`` can select: ``soft_mask``, ``gaussian__product__fs``, ``gradient_id__routed__batchwise``."""
    if isinstance(value, str):
        return value
    return "__".join([value.task_id_mode, value.cil_rule] + ["fs"] * value.first_session_adaptation
                     + ["batchwise"] * value.batchwise)


#: (method, setting) of every valid setting: per sample, and per test batch where that applies.
TEST_CASES = [(m, s) for m in METHODS for b in (False, True) for s in valid_settings(METHODS[m].provides, b)]
#: (method, setting) of every invalid one.
INVALID_CASES = [(m, Inference(mode, rule, first, b)) for m in METHODS for mode in TASK_ID_RULES
                 for rule in CIL_RULES for first in (False, True) for b in (False, True)
                 if (m, Inference(mode, rule, first, b)) not in TEST_CASES]


def test_the_declaration_gives_the_expected_settings():
    assert set(METHODS) == set(EXPECTED)
    for method, cls in METHODS.items():
        assert {_name(s) for s in valid_settings(cls.provides)} == EXPECTED[method], method
        # batch-wise: the per-sample settings that route to one task adapter, never for combined or product
        batchwise = {_name(s) for s in valid_settings(cls.provides, batchwise=True)}
        assert batchwise == {n for n in EXPECTED[method] if ("+routed" in n or "+unified" in n)
                             and "task_adapters" in cls.provides}, method
        for recipe, setting in cls.recipes.items():  # both recipes are settings that apply
            assert _name(setting) in EXPECTED[method] and not setting.batchwise, (method, recipe)
    assert len(TEST_CASES) + len(INVALID_CASES) == len(METHODS) * len(TASK_ID_RULES) * len(CIL_RULES) * 4


def _args(method, setting, model, data, out, **kw) -> ContinualArguments:
    return ContinualArguments(
        method=method, task_id_mode=setting.task_id_mode, cil_rule=setting.cil_rule,
        first_session_adaptation=setting.first_session_adaptation, task_id_batchwise=setting.batchwise,
        model=model, dataset=data, num_tasks=2, output_dir=str(out), num_epochs=1, batch_size=8, eval_batch_size=16,
        max_steps_per_task=2, max_length=32, lora_r=2, num_memory_tokens=1, ranpac_dim=64, **kw)


@pytest.mark.parametrize("method,setting", TEST_CASES, ids=_id)
def test_valid_setting_runs_end_to_end(tmp_path, tiny_bert, toy_csv, method, setting):
    run_dir = tmp_path / "run"
    results = build_trainer(_args(method, setting, tiny_bert, toy_csv, run_dir)).run()
    config = RunResults.load(str(run_dir)).config
    assert (config["task_id_mode"], config["cil_rule"], config["first_session_adaptation"],
            config["task_id_batchwise"]) == (setting.task_id_mode, setting.cil_rule, setting.first_session_adaptation,
                                             setting.batchwise)
    assert results.tasks_completed == 2 and results.task_identity.per_sample is not setting.batchwise
    again = evaluate_run(str(run_dir), str(tmp_path / "again"))  # the saved adapters, the run's own settings
    assert again.accuracy_matrix == results.accuracy_matrix
    assert again.task_id_accuracy_matrix == results.task_id_accuracy_matrix
    names = ["joint"] if method.startswith("joint") else ["task_0", "task_1"]
    assert verify_run(str(run_dir), load_run(str(run_dir))) == dict.fromkeys(names, 0.0)


@pytest.mark.parametrize("method,setting", INVALID_CASES, ids=_id)
def test_invalid_setting_is_refused_before_anything_loads(tmp_path, monkeypatch, method, setting):
    def loads(*args, **kwargs):
        raise AssertionError("data or model loaded for an invalid setting")

    monkeypatch.setattr(launch, "load_sequence", loads)
    monkeypatch.setattr(launch, "load_model_and_pipeline", loads)
    out = tmp_path / "never"
    with pytest.raises(ValueError, match=f"^--method {method}: --") as err:
        build_trainer(_args(method, setting, "unused-model", "unused-data", out))
    assert "Fix: with --method" in str(err.value) and not out.exists()


def test_an_invalid_setting_is_a_flag_error_on_the_command_line(tmp_path, capsys):
    """Refused like any other flag: exit 2, the usage line, one line naming each problem, the recipe's part in it,
    and the settings that apply; nothing is created."""
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--method", "lora", "--task_id_mode", "gradient_id", "--output_dir", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and err[0].startswith("usage: peft-memory train")
    assert err[-1] == (
        "peft-memory train: error: --method lora: --task_id_mode gradient_id needs adapters that mix with weights "
        "alpha_t (soft masks, prompts); --cil_rule product (--recipe recommended's) re-scores a task "
        "posterior, which only --task_id_mode gaussian gives. Fix: with --method lora use --task_id_mode prompt_id | "
        "max_logit | nearest_mean | gaussian.")
    assert not (tmp_path / "x").exists()


def test_recipes_fill_in_only_what_the_flags_leave_out():
    spec = RunSpec.resolve(ContinualArguments(method="soft_mask"))
    assert spec.inference == Inference("gaussian", "product", first_session_adaptation=True)
    assert (spec.args.task_id_mode, spec.args.cil_rule, spec.args.first_session_adaptation) == (
        "gaussian", "product", True)
    paper = RunSpec.resolve(ContinualArguments(method="soft_mask", recipe="paper"))
    assert paper.inference == Inference("gradient_id", "routed")
    off = RunSpec.resolve(ContinualArguments(method="soft_mask", first_session_adaptation=False))
    assert off.inference == Inference("gaussian", "product")
    mixed = RunSpec.resolve(ContinualArguments(method="dual_prompt", recipe="paper", task_id_mode="gaussian"))
    assert mixed.inference == Inference("gaussian", "unified")  # the paper's unified classifier, Gaussian task
    assert RunSpec.resolve(spec) is spec  # resolved once
    with pytest.raises(ValueError, match="--recipe 'best' is unknown; use recommended or paper."):
        ContinualArguments(recipe="best")
    with pytest.raises(ValueError, match="^--task_id_shots 7 sets how many samples"):
        RunSpec.resolve(ContinualArguments(method="soft_mask", task_id_shots=7))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_recipe_resolves(method):
    for recipe, setting in METHODS[method].recipes.items():
        spec = RunSpec.resolve(ContinualArguments(method=method, recipe=recipe))
        assert spec.inference == setting and spec.args.recipe == recipe
        assert spec.args.query_pooling != "auto" and spec.args.head_pooling != "auto"


def test_the_matrix_covers_every_method_and_rule():
    assert {m for m, _ in TEST_CASES} == set(METHODS)
    assert {s.task_id_mode for _, s in TEST_CASES} == set(TASK_ID_RULES)
    assert {s.cil_rule for _, s in TEST_CASES} == set(CIL_RULES)
