"""SLAKE (Liu et al. 2021): ``imgs/xmlabN/source.jpg`` + ``train.json``, ``validate.json``, ``test.json``.

One sample per question (English and Chinese; ``language`` tells them apart), read as VQA-RAD's are (see
``vqa_rad``): items with a missing or undecodable image or an empty or unknown field are reported as
``<json>:row N (qid Q)``. ``test.json`` is the publisher's test set; ``validate.json`` (the real release's name,
2,099 questions; ``validation.json`` in the Hub repository's later revisions) is read as training data
(validation is then drawn from training images). A folder without ``test.json`` (a partial download) builds with
a warning. Each image folder's ``mask.png``, ``detection.json`` and ``question.json`` are the publisher's
annotations beside the image: not used (dropped, said so); the Hub repository's ``mask.txt`` and the unpacked ``KG/``
are publisher documents. An image is kept as the data of its questions. The modality is the item's own (``CT``,
``MRI``, ``X-Ray``).
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from multimed_hf.builders.vqa_rad import ANSWER_TYPES, VQAJsonBuilder, answer_text
from multimed_hf.data.errors import BadSourceFile, UnusedSourceFile
from multimed_hf.data.sample import Sample

__all__ = ["SLAKEBuilder"]

_SPLITS = {"train.json": "train", "validate.json": "train", "validation.json": "train", "test.json": "test"}
_MODALITIES = {"ct": "ct", "mri": "mri", "x-ray": "xray", "xray": "xray"}
_IMAGE = re.compile(r"^imgs/xmlab\d+/source\.(jpg|jpeg|png)$")
_COMPANIONS = re.compile(r"^imgs/xmlab\d+/(mask\.png|detection\.json|question\.json)$")
#: Publisher documents: the knowledge graph (``KG.zip`` unpacked), and ``mask.txt`` beside the split files in the Hub
#: repository ``BoKelvin/SLAKE`` (not read).
_DOCUMENTS = re.compile(r"^(KG/.*|README.*|LICENSE.*|mask\.txt)$")


class SLAKEBuilder(VQAJsonBuilder):
    task = "med_vqa"
    source = "slake"
    reading_version = "5"  # 2: the Hub repository's mask.txt is a document, not a stray file; 3: mask.png,
    # detection.json and question.json are not used (dropped), no longer index files; 4: a verbatim repeated item
    # kept once, images of an unreadable split file named so, an item without a qid rejected; 5: an entry that is no
    # object rejected as its row (it rejected the whole file)

    @classmethod
    def detect(cls, root: Path) -> bool:
        return (root / "imgs").is_dir() and any((root / name).is_file() for name in _SPLITS)

    def layout_warnings(self) -> list[str]:
        missing = [name for name in ("train.json", "test.json") if not (self.root / name).is_file()]
        if not any((self.root / name).is_file() for name in ("validate.json", "validation.json")):
            missing.append("validate.json")
        return [f"partial download: no {', '.join(missing)}; built from what is there"] if missing else []

    def qa_files(self) -> list[str]:
        return [name for name in _SPLITS if (self.root / name).is_file()]

    def image_path(self, item: dict) -> str:
        name = answer_text(item["img_name"])
        if not name or not _IMAGE.match(f"imgs/{name}"):
            raise BadSourceFile(f"img_name {item['img_name']!r} is not xmlabN/source.jpg")
        return f"imgs/{name}"

    def item_fields(self, item: dict, relpath: str):
        question, answer = answer_text(item["question"]), answer_text(item["answer"])
        kind = ANSWER_TYPES.get(str(item["answer_type"]).strip().lower())
        if not question or not answer:
            raise BadSourceFile(f"empty {'question' if not question else 'answer'}")
        if kind is None:
            raise BadSourceFile(f"answer_type {item['answer_type']!r} is not CLOSED or OPEN")
        fields = {
            "question": question, "answer": answer, "answer_type": kind,
            "question_type": answer_text(item.get("content_type")), "organ": answer_text(item.get("location")),
            "language": answer_text(item.get("q_lang")),
        }
        qid = answer_text(item["qid"])
        if qid is None:
            raise BadSourceFile(f"no qid: qid {item['qid']!r} names no sample")
        return f"{PurePosixPath(relpath).stem}:{qid}", fields, _SPLITS[relpath]

    def item_modality(self, item: dict, items_of_image: list[dict]) -> str:
        modality = _MODALITIES.get(str(item.get("modality", "")).strip().lower())
        if modality is None:
            raise BadSourceFile(f"modality {item.get('modality')!r} is not CT, MRI or X-Ray")
        return modality

    def read_file(self, relpath: str) -> list[Sample]:
        if relpath in _SPLITS:
            return self.read_qa_file(relpath)
        if _IMAGE.match(relpath):
            return self.read_image(relpath)
        if _COMPANIONS.match(relpath):
            raise UnusedSourceFile("not used: the publisher's annotation beside the image (mask, boxes or its "
                                   "questions again); the task reads the image and the split files' questions")
        if _DOCUMENTS.match(relpath):
            return []
        raise BadSourceFile("stray file: expected {train,validate,test}.json or imgs/xmlabN/source.jpg")
