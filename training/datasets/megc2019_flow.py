"""The MEGC2019 composite as published with optical-flow images (HTNet / STSTNet release).

``root`` holds ``combined_3_class2_for_optical_flow.csv`` and ``datasets/``. Csv
columns: dataset (casme2 / smic / samm), sub, filename_o, label (0 negative,
1 positive, 2 surprise), apex (empty), imagename, sub_filename. Subjects are written
as the composite and the STSTNet checkpoints name them (``sub01``, ``s01``, ``006``):
68 subjects, 442 samples. Each sample's one frame is its 28x28 u/v/optical-strain PNG
``datasets/STSNet_whole_norm_u_v_os/<sub>_<filename_o> .png`` — note the space before
``.png`` — when it exists; the 224x224 apex face crop
``datasets/combined_datasets_whole/<imagename>`` (SMIC written ``s01_s1_ne_01.jpg``)
goes to ``attributes["apex_image"]`` when it exists, and ``attributes["imagename"]``
always. ``emotion`` is the megc3 class: the composite publishes no finer label, and its
classes are the composite's own (the 2019 CASME II sheet would give other counts).
"""

from __future__ import annotations

from pathlib import Path

from training.classmaps import MEGC3
from training.datasets.records import header_records
from training.samples import Sample

NAME = "megc2019-flow"
DEFAULT_SHEETS = ("combined_3_class2_for_optical_flow.csv",)
FLOW_FOLDER = Path("datasets") / "STSNet_whole_norm_u_v_os"
APEX_FOLDER = Path("datasets") / "combined_datasets_whole"
SOURCES = ("casme2", "smic", "samm")


def flow_image_path(root: Path, subject: str, sample_id: str) -> Path:
    """The composite's flow-image name, space before the suffix included."""
    return root / FLOW_FOLDER / f"{subject}_{sample_id} .png"


def apex_image_path(root: Path, image_name: str) -> Path:
    return root / APEX_FOLDER / image_name


def read(root: Path | None, sheet: Path) -> list[Sample]:
    samples = []
    for record in header_records(sheet, ("dataset", "sub", "filename_o", "label", "imagename")):
        source = record.required("dataset").lower()
        if source not in SOURCES:
            raise record.error(f"unknown source dataset {source!r} (expected {', '.join(SOURCES)})", "dataset")
        label_id = record.required("label")
        if label_id not in {str(index) for index in range(len(MEGC3.classes))}:
            raise record.error(f"label {label_id!r} is not 0, 1 or 2", "label")
        class_name = MEGC3.classes[int(label_id)]
        subject = record.required("sub")
        sample_id = record.required("filename_o")
        image_name = record.required("imagename")
        attributes = {"imagename": image_name}
        frames: tuple[Path, ...] = ()
        if root is not None:
            flow = flow_image_path(root, subject, sample_id)
            frames = (flow,) if flow.is_file() else ()
            apex = apex_image_path(root, image_name)
            if apex.is_file():
                attributes["apex_image"] = str(apex)
        samples.append(Sample(
            dataset=NAME,
            subject=subject,
            sample_id=sample_id,
            emotion=class_name,
            labels={MEGC3.name: class_name},
            frames=frames,
            source=source,
            attributes=attributes,
        ))
    return samples
