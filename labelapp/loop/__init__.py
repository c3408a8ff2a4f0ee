"""The closed loop: labels → reward-model version → rejection-sampling round →
comparisons.

- ``triggers``: starting jobs (by hand, by threshold, coalesced after labels).
- ``reward``: training, registering and promoting a reward-model version.
- ``rounds``: one rejection-sampling round and what it writes.
- ``overview``: the reads the pages and triggers need (plain data, no page dicts).

Services are called by the thin Celery tasks (labelapp/tasks.py) and by the API and
pages to start jobs by hand; ``training/`` does the ML. Room for ``policy`` (policy
training) and ``selection`` (active pair selection) next to these.
"""
