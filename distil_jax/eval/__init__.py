"""Downstream evaluation: GLUE / IMDb / SQuAD fine-tuning with transformers-compatible
heads, the paper's protocol and report tables (and, in `benchmark_inference`, speed).

Modules, in data-flow order: `tasks` (what each task is), `readers` / `squad`
(reading), `features` (tokenised arrays, batches), `task_data` (a task's
train and scored eval sets), `heads` / `hf_heads` (models, HF import and
export), `steps` / `trainer` (jitted sharded fine-tuning), `metrics`,
`protocol` (grid x seeds, medians, resume) and `report` (markdown tables).
"""
