"""The inference wing: how a test sample's task and class are decided. The declaration of what each task-identity
rule and CIL rule needs and what each method provides (:mod:`.declaration`), the rules themselves (:mod:`.task_id`,
:mod:`.evaluation`, :mod:`.combined`), the class statistics they read (:mod:`.statistics`, :mod:`.collection`) and
the metrics of the accuracy matrix (:mod:`.metrics`)."""
