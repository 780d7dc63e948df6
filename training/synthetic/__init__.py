"""Synthetic micro-expression footage with exact ground truth (``mer synth``; see docs/synthetic.md).

Modules, in pipeline order: ``sources`` (bundled face photos) and ``landmarks`` (dlib),
``identities`` (subjects), ``fields`` and ``action_units`` (expressions as displacement
fields), ``events`` (timing), ``distractors``, ``render``, ``clips`` (one clip planned),
``layouts`` (the dataset-style outputs), ``writers``, ``settings`` and ``figures``.
"""
