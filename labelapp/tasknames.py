"""Celery task names: the one registry shared by the task decorators (tasks.py), the
job layer (jobs.py), the loop's triggers and beat's schedule (config/settings.py).

Domain modules enqueue by name (``celery.current_app.send_task``), so none of them
imports ``tasks.py`` or ``config.celery``; a name here without a task, or a task
without a name here, fails tests/labelapp/test_jobs.py.
"""

from __future__ import annotations

# Routed to the "gpu" queue by the "pairloop.gpu.*" pattern in settings.
TRAIN_REWARD_MODEL = "pairloop.gpu.train_reward_model"
RUN_ROUND = "pairloop.gpu.run_round"
TRAIN_POLICY = "pairloop.gpu.train_policy"
# Reward-model forward passes over the open comparisons (labelapp.loop.selection).
SCORE_COMPARISONS = "pairloop.gpu.score_comparisons"
# Simulated labelling on the project's labels (labelapp.loop.strategy_gain).
STRATEGY_GAIN = "pairloop.gpu.strategy_gain"
EXPORT = "pairloop.export"
REAP_STALE_JOBS = "pairloop.jobs.reap_stale"
CHECK_TRIGGERS = "pairloop.loop.check_triggers"
RECLAIM_LEASES = "pairloop.leases.reclaim"
# A large upload from the data page (labelapp.services.uploads).
IMPORT_UPLOAD = "pairloop.import"

# Job kind → the task that runs it (job_enqueue refuses a kind without one).
# Small uploads and ``import_data`` import in the request; large uploads are jobs.
TASK_FOR_KIND: dict[str, str] = {
    "train_rm": TRAIN_REWARD_MODEL,
    "round": RUN_ROUND,
    "train_policy": TRAIN_POLICY,
    "score_comparisons": SCORE_COMPARISONS,
    "strategy_gain": STRATEGY_GAIN,
    "export": EXPORT,
    "import": IMPORT_UPLOAD,
}
