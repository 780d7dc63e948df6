"""Action-unit targets: the FACS coding of each sample, as a multi-label training signal.

CASME II and SAMM code every micro-expression with the action units (AUs) that moved
('4+7+L10'). A recipe with ``au_loss_weight > 0`` trains a second, training-only head that
predicts them from the same features as the class head (``training.trainer``): the AUs say
*where* the face moved, a finer signal than three classes on 442 samples. Only training
samples' codes are ever used; the held-out subject's are not read, and the exported engine
has no AU head.

The composite (``megc2019-flow``) publishes no AUs: :func:`attach_source_action_units` takes
them from the CASME II and SAMM sheets by subject and file name. SMIC has no FACS coding, so
its samples have none and add nothing to the AU loss.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from engines.errors import InputError
from training.samples import Sample

AU_VOCABULARY: tuple[int, ...] = (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 24, 25, 26, 43)
"""The AUs the head predicts: the upper- and lower-face AUs that EMFACS's emotion prototypes use,
plus 43 (eyes closed). Fixed before any run; codes outside it are ignored."""

# '4', 'L10', 'R12A', 'A12B', 'A/L12', '10A/B', 'B18', 'T23', '43E': an optional side or asymmetry
# prefix, the AU number, an optional intensity (A-E, or a range such as A/B).
_CODE = re.compile(r"^(?:A/)?[LRABT]?(\d+)(?:[A-E](?:/[A-E])?)?$")

# Sources whose sheets carry AUs, with the reader that reads them.
AU_SOURCES: tuple[str, ...] = ("casme2", "samm")


def au_number(code: str) -> int | None:
    """The AU number of one coded item, or None for what is not a plain AU: alternatives
    ('L12 or L14', '(R6 or R12)': the coder was unsure which), references ('ref(10)') and
    notes ('soft focus')."""
    match = _CODE.match(code.strip())
    return int(match.group(1)) if match else None


def attach_source_action_units(samples: Sequence[Sample], sheets_folder: Path) -> list[Sample]:
    """``samples`` (a composite's) with ``action_units`` taken from their source datasets' sheets.

    ``sheets_folder`` holds the CASME II and SAMM coding sheets under their standard names.
    A sample whose source has a sheet there but which that sheet lacks is an error (the sheet
    is the wrong one); SMIC samples are returned unchanged.
    """
    from training.datasets import load_dataset, standard_sheet

    wanted = {s.source for s in samples} & set(AU_SOURCES)
    coded: dict[tuple[str, str, str], tuple[str, ...]] = {}
    for source in sorted(wanted):
        for record in load_dataset(source, sheet=standard_sheet(source, sheets_folder)):
            coded[(source, record.subject, record.sample_id)] = record.action_units
    attached = []
    for sample in samples:
        if sample.source not in wanted:
            attached.append(sample)
            continue
        key = (sample.source, sample.subject, sample.sample_id)
        if key not in coded:
            raise InputError(f"{sample.source} sample {sample.key} is not in that dataset's coding sheet",
                             path=sheets_folder)
        attached.append(dataclasses.replace(sample, action_units=coded[key]))
    return attached


def au_target_matrix(samples: Sequence[Sample], vocabulary: Sequence[int] = AU_VOCABULARY) -> torch.Tensor | None:
    """(N, len(vocabulary)) float: 1 where the sample's coding names the AU, 0 where it does not;
    a row of NaN for a sample without any coding (it is left out of the AU loss). None when no
    sample is coded at all."""
    column = {au: index for index, au in enumerate(vocabulary)}
    targets = torch.full((len(samples), len(vocabulary)), float("nan"))
    for row, sample in enumerate(samples):
        if not sample.action_units:
            continue
        targets[row] = 0.0
        for code in sample.action_units:
            number = au_number(code)
            if number in column:
                targets[row, column[number]] = 1.0
    return None if torch.isnan(targets).all() else targets
