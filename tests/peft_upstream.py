"""Loads PEFT's own test helpers (``tests/testing_common.py`` of the peft sdist, version = the installed peft) without
copying them: ``make peft-tests`` downloads the sdist into ``.venv/peft-tests/``; ``PEFT_TESTS_DIR`` points elsewhere.

The sdist's ``tests`` folder is imported as the package ``peft_upstream_tests`` (our own folder is also called
``tests``). ``testing_common`` imports ``diffusers`` for one Stable Diffusion check we never run; when diffusers is
not installed a stand-in module is registered so the import works (that check is in the skip list).
"""

from __future__ import annotations

import importlib
import os
import sys
import types

import peft

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DIR = os.path.join(ROOT, ".venv", "peft-tests", f"peft-{peft.__version__}", "tests")


def tests_dir() -> str:
    """The folder holding PEFT's ``testing_common.py``; raises ``RuntimeError`` naming the fix when absent."""
    path = os.environ.get("PEFT_TESTS_DIR", DEFAULT_DIR)
    if not os.path.isfile(os.path.join(path, "testing_common.py")):
        raise RuntimeError(f"PEFT's own tests are not at {path}: run `make peft-tests` (downloads the sdist of the "
                           f"installed peft {peft.__version__}) or set PEFT_TESTS_DIR to its tests/ folder.")
    return path


def load_testing_common():
    """PEFT's ``testing_common`` module (``PeftCommonTester``)."""
    if "peft_upstream_tests" not in sys.modules:
        package = types.ModuleType("peft_upstream_tests")
        package.__path__ = [tests_dir()]
        sys.modules["peft_upstream_tests"] = package
    try:
        importlib.import_module("diffusers")
    except ImportError:
        stand_in = types.ModuleType("diffusers")
        stand_in.StableDiffusionPipeline = type("StableDiffusionPipeline", (), {})
        sys.modules["diffusers"] = stand_in
    return importlib.import_module("peft_upstream_tests.testing_common")
