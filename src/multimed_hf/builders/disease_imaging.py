"""The disease config over the other tasks' imaging sources: each source's own reading, its label harmonised.

A record keeps its image, modality and patient; its own label becomes ``diseases`` (the harmonised names present)
and ``label_mask`` (every harmonised name the source can assert; all others are unknown, never negative), through
the ``diseases`` label map of the source's entry in the disease task (``_task_entries.DISEASE_IMAGING_SOURCES``).
"""

from __future__ import annotations

from typing import ClassVar

from multimed_hf.builders.aptos2019 import APTOS2019Builder
from multimed_hf.builders.brain_tumor_mri import BrainTumorMRIBuilder
from multimed_hf.builders.breakhis import BreakHisBuilder
from multimed_hf.builders.cc_ccii import CCCCIIBuilder
from multimed_hf.builders.eyepacs import EyePACSBuilder
from multimed_hf.builders.kermany_cxr import KermanyCXRBuilder
from multimed_hf.builders.mosmeddata import MosMedDataBuilder
from multimed_hf.builders.oct2017 import OCT2017Builder
from multimed_hf.data.errors import BadSourceFile
from multimed_hf.data.sample import RejectedRecord, Sample
from multimed_hf.tasks import SourceSpec, TaskSpec, get_task

__all__ = [
    "AsDisease", "BrainTumorDiseaseBuilder", "OCT2017DiseaseBuilder", "KermanyCXRDiseaseBuilder",
    "CCCCIIDiseaseBuilder", "MosMedDataDiseaseBuilder", "BreakHisDiseaseBuilder", "APTOS2019DiseaseBuilder",
    "EyePACSDiseaseBuilder",
]

DISEASE = "disease"


class AsDisease:
    """Mixin before a source's own builder: it reads as that builder does (``spec`` stays the source's entry in
    its own task), then each sample's own label is mapped to the disease config's columns."""

    task = DISEASE
    #: The task whose builder this reads through (its label maps, modality and layout).
    own_task: ClassVar[str]

    @classmethod
    def task_spec(cls) -> TaskSpec:
        return get_task(cls.own_task)

    @classmethod
    def spec(cls) -> SourceSpec:
        return get_task(cls.own_task).source(cls.source)

    @classmethod
    def disease_map(cls) -> dict[str, str]:
        return dict(get_task(DISEASE).source(cls.source).label_map["diseases"])

    def read_file(self, relpath: str) -> list[Sample | RejectedRecord]:
        mapping = self.disease_map()
        mask = sorted(set(mapping.values()))
        own_labels = get_task(self.own_task).label_names
        records = []
        for record in super().read_file(relpath):
            if isinstance(record, Sample):
                labels = [record.fields.get(name) for name in own_labels]
                present = [mapping[value] for value in labels if value in mapping]
                if not present:
                    raise BadSourceFile(
                        f"no harmonised disease for labels {dict(zip(own_labels, labels))}: expected one of "
                        f"{sorted(mapping)}"
                    )
                record.fields = {
                    "image": record.fields["image"], "modality": record.fields["modality"],
                    "diseases": sorted(set(present)), "label_mask": mask,
                    "patient_id": record.fields.get("patient_id"),
                }
            records.append(record)
        return records


class BrainTumorDiseaseBuilder(AsDisease, BrainTumorMRIBuilder):
    own_task = "brain_tumor"


class OCT2017DiseaseBuilder(AsDisease, OCT2017Builder):
    own_task = "diabetic_retinopathy"


class KermanyCXRDiseaseBuilder(AsDisease, KermanyCXRBuilder):
    own_task = "radiographic_findings"


class CCCCIIDiseaseBuilder(AsDisease, CCCCIIBuilder):
    own_task = "radiographic_findings"


class MosMedDataDiseaseBuilder(AsDisease, MosMedDataBuilder):
    own_task = "radiographic_findings"


class BreakHisDiseaseBuilder(AsDisease, BreakHisBuilder):
    own_task = "breast_cancer"


class APTOS2019DiseaseBuilder(AsDisease, APTOS2019Builder):
    own_task = "diabetic_retinopathy"


class EyePACSDiseaseBuilder(AsDisease, EyePACSBuilder):
    own_task = "diabetic_retinopathy"
