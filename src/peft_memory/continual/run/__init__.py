"""The run wing: the arguments of a run and their resolution (:mod:`.arguments`, :mod:`.spec`), the Accelerate-driven
trainer and its optimisation, the output folder (checkpoints, results, plots, reference predictions), loading what a
run names, and sharing it (:mod:`.hub`, :mod:`.report`)."""
