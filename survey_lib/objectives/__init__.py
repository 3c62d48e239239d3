"""One file per training objective: losses, training steps, heads and EMA teachers.

``distillation`` (DeiT), ``infonce`` (CLIP, SimCLR), ``mae``, ``dino``, ``multitask`` (the ITMO
thesis's framework). An objective knows no dataset, evaluation, figure or particular model: it
takes a model and a batch (``step(model, batch) -> StepOutput``).
"""
