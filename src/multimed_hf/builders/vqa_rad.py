"""VQA-RAD (OSF 89kps): ``VQA_RAD Dataset Public.json`` + ``VQA_RAD Image Folder/<image_name>``.

Downloaded copies also spell these names with ``+`` for each space (``VQA_RAD+Dataset+Public.json``,
``VQA_RAD+Image+Folder``): either spelling is read.

One sample per question: the image it asks about (decoded and checked, original bytes kept), the question, the answer
as the publisher wrote it (numbers as text) and its type, ``closed`` (yes/no or choice: classified over the
closed-answer vocabulary) or ``open`` (free text). Items are the JSON's records: one whose image is missing or
undecodable, or whose question, answer or answer type is empty or unknown, is reported as
``<json>:row N (qid Q)`` while the other items are kept; so is an item without a qid. An item repeated verbatim
is kept once (the copy named); different items under one qid are all rejected, each naming the others' rows. Image
files are validated too; one no question refers to is reported as not used, or, where a QA file cannot be read
(cut, empty), rejected naming that file. (An image file's manifest entry reads "image of its questions": its bytes
are stored in the rows of its questions, whose entries name the QA file.)

Publisher split: ``phrase_type`` ``test_freeform`` / ``test_para`` are the test questions. The split is by
question, so a test image also has training questions: grouping by image (its file's sha256, plus near-duplicate
images through their perceptual hash) keeps the test questions and drops and reports the training questions of
test images.

Modality: VQA-RAD records the organ, not the modality. CHEST images are X-rays and ABD images CTs (the data
set's paper); for HEAD images (CT or MRI) the image's own modality questions decide where they answer it, else
MRI is assumed.
"""

from __future__ import annotations

import json
import re
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import ClassVar

from multimed_hf.builders._download import NonDataFiles
from multimed_hf.builders._records import RecordRejections, dependency_version
from multimed_hf.data.errors import BadSourceFile, UnusedSourceFile
from multimed_hf.data.images import read_image_file
from multimed_hf.data.sample import Sample
from multimed_hf.data.source_builder import SourceBuilder

__all__ = ["VQAJsonBuilder", "VQARADBuilder", "answer_text", "ANSWER_TYPES"]

ANSWER_TYPES = {"closed": "closed", "open": "open", "yes/no": "closed"}
_MODALITY_WORDS = (
    ("mri", re.compile(r"\b(mri|mr|t1|t2|flair|dwi|adc|diffusion)\b")),
    ("ct", re.compile(r"\b(ct|computed tomography)\b")),
    ("xray", re.compile(r"\b(x-?ray|radiograph|cxr|plain film)\b")),
)


def answer_text(value) -> str | None:
    """The answer as text (VQA-RAD stores some numbers as JSON numbers), stripped; None if empty."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def modality_from_text(text: str) -> str | None:
    text = text.lower()
    for modality, pattern in _MODALITY_WORDS:
        if pattern.search(text):
            return modality
    return None


#: The manifest's note on an image: the data of the questions that name it (each question a sample).
IMAGE_OF_QUESTIONS = "image of its questions: stored with each question's sample"

class VQAJsonBuilder(NonDataFiles, RecordRejections, SourceBuilder):
    """QA items in JSON files beside an image folder. Subclasses name the files and read an item's fields."""

    record_noun = "question"
    image_suffixes: ClassVar[tuple[str, ...]] = (".jpg", ".jpeg", ".png")
    reading_version: ClassVar[str] = "3"  # 2: a verbatim repeated item kept once; images of an unreadable QA file
    # named so (not "not used"); an item without a qid rejected; 3: an entry that is no object rejected as its row
    # (it rejected the whole file)

    @cached_property
    def version(self) -> str:
        """The reading code's version and the images' content: a QA file's cached samples hold its images'
        hashes, so a replaced image must re-validate the QA file too."""
        return dependency_version(self.reading_version, (
            p for p in self.root.rglob("*") if p.is_file() and p.suffix.lower() in self.image_suffixes
        ))

    def qa_files(self) -> list[str]:
        """The JSON files holding QA items, relative to the root."""
        raise NotImplementedError

    def image_path(self, item: dict) -> str:
        """The item's image, relative to the root."""
        raise NotImplementedError

    def item_fields(self, item: dict, relpath: str) -> tuple[str, dict, str | None]:
        """``(sample id, fields other than image/modality, publisher split)``; ``BadSourceFile`` for a bad item."""
        raise NotImplementedError

    def item_modality(self, item: dict, items_of_image: list[dict]) -> str:
        raise NotImplementedError

    @staticmethod
    def _load_json(path: Path) -> list[dict]:
        if not path.is_file():
            raise BadSourceFile("a folder, not a JSON file" if path.is_dir() else "not in the source")
        try:
            data = path.read_bytes()
        except OSError as err:
            raise BadSourceFile(f"unreadable: {type(err).__name__}: {err}") from None
        if not data:
            raise BadSourceFile("empty file (0 bytes)")
        try:
            items = json.loads(data.decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise BadSourceFile(f"not valid JSON: {type(err).__name__}: {err}") from None
        if not isinstance(items, list):
            raise BadSourceFile(f"expected a JSON list of question objects; it holds a JSON {type(items).__name__}")
        return items  # an entry that is no object is rejected as its row (read_qa_file)

    @cached_property
    def _qa_index(self) -> tuple[set[str], dict[str, str]]:
        """``(referenced, unreadable)``: image paths some readable QA file refers to; each QA file that cannot be
        read -> why (its images cannot be told used or not: they are rejected naming it, not dropped as unused)."""
        found, unreadable = set(), {}
        for relpath in self.qa_files():
            try:
                items = self._load_json(self.root / relpath)
            except BadSourceFile as err:
                unreadable[relpath] = err.reason
                continue
            for item in items:
                try:
                    found.add(self.image_path(item))
                except (KeyError, TypeError, BadSourceFile):
                    continue
        return found, unreadable

    @property
    def _referenced(self) -> set[str]:
        """Image paths some readable QA file refers to."""
        return self._qa_index[0]

    def no_sample_note(self, relpath: str) -> str:
        """An image its questions name is their data, stored with their samples (not an index file)."""
        if relpath in self._referenced:
            return IMAGE_OF_QUESTIONS
        return super().no_sample_note(relpath)

    def read_image(self, relpath: str) -> list[Sample]:
        """An image file: validated here, stored with its questions (from the QA file's samples)."""
        if relpath not in self._referenced:
            unreadable = self._qa_index[1]
            if unreadable:  # its questions may be in a file that cannot be read: not known to be unused
                named = "; ".join(f"{qa}: {why}" for qa, why in sorted(unreadable.items()))
                raise BadSourceFile(f"no question: no readable QA file refers to this image; its questions may be in "
                                    f"a QA file that cannot be read ({named})")
            raise UnusedSourceFile("not used: no question in the QA file(s) refers to this image")
        read_image_file(self.root / relpath, relpath)  # a bad (or blank) image is named here too
        return []

    def read_qa_file(self, relpath: str) -> list[Sample]:
        items = self._load_json(self.root / relpath)
        by_image: dict[str, list[dict]] = {}
        for item in items:
            try:
                by_image.setdefault(self.image_path(item), []).append(item)
            except (KeyError, TypeError, BadSourceFile):
                continue
        images: dict[str, tuple] = {}
        made, bad = [], []  # made: (record, item, sample)
        for n, item in enumerate(items, start=1):
            if not isinstance(item, dict):  # one bad entry (a null) is its row's, not the whole file's
                bad.append((str(n), f"not a question object: {json.dumps(item)[:80]}"))
                continue
            record = f"{n} (qid {item.get('qid', '?')})"
            try:
                sample_id, fields, split = self.item_fields(item, relpath)
                image = self.image_path(item)
                if image not in images:
                    images[image] = self._decode(image)
                ref, phash = images[image]
                modality = self.item_modality(item, by_image.get(image, [item]))
            except (KeyError, TypeError) as err:
                bad.append((record, f"item lacks a field or has a wrong type: {type(err).__name__}: {err}"))
                continue
            except BadSourceFile as err:
                bad.append((record, err.reason))
                continue
            made.append((record, item, Sample(
                sample_id=sample_id, source_path=relpath,
                fields={"image": ref, "modality": modality, **fields},
                # all questions on one image together, and exact copies of an image under other names with them
                group_key=f"image:{ref.sha256}", published_split=split, perceptual_hash=phash,
            )))
        return self.keep_records(relpath, *self._once_each(relpath, made, bad))

    @staticmethod
    def _once_each(relpath: str, made: list[tuple], bad: list[tuple[str, str]]):
        """``(samples, bad)`` with each sample id once: an item repeated verbatim is kept once (its copies named),
        different items under one id are all rejected, each naming the others' rows (no copy is trusted)."""
        by_id: dict[str, list[tuple]] = {}
        for entry in made:
            by_id.setdefault(entry[2].sample_id, []).append(entry)
        samples, bad = [], list(bad)
        for record, item, sample in made:
            same = by_id[sample.sample_id]
            if len(same) == 1 or (same[0][2] is sample and all(other == item for _, other, _ in same)):
                samples.append(sample)
            elif all(other == same[0][1] for _, other, _ in same):
                bad.append((record, f"repeated item: the same as {relpath}:row {same[0][0]} (kept once)"))
            else:
                others = ", ".join(f"{relpath}:row {r}" for r, _, s in same if s is not sample)
                bad.append((record, f"duplicate id: {sample.sample_id!r} is also {others}, a different item: "
                                    "all are rejected"))
        return samples, bad

    def _decode(self, image: str):
        path = self.root / image
        if not path.is_file():
            raise BadSourceFile(f"missing image: {image} is not in the image folder")
        try:
            ref, phash = read_image_file(path, image)  # blank images rejected too
        except BadSourceFile as err:
            raise BadSourceFile(f"image {image}: {err.reason}") from None
        except OSError as err:  # permission denied: its questions are rejected, not the whole QA file
            raise BadSourceFile(f"image {image}: unreadable: {type(err).__name__}: {err}") from None
        return ref, phash


class VQARADBuilder(VQAJsonBuilder):
    task = "med_vqa"
    source = "vqa_rad"

    QA_FILE = "VQA_RAD Dataset Public.json"
    IMAGE_FOLDER = "VQA_RAD Image Folder"
    #: The same items in the publisher's other two formats: read as documents, the JSON is the one used.
    DOCUMENTS = ("VQA_RAD Dataset Public.xlsx", "VQA_RAD Dataset Public.xml", "Readme.docx", "README.txt")
    ORGAN_MODALITY = {"CHEST": "xray", "ABD": "ct"}

    @staticmethod
    def spellings(name: str) -> tuple[str, str]:
        """A published name as downloaded copies spell it: with its spaces, or URL-encoded with ``+`` for each
        space (``VQA_RAD+Dataset+Public.json``, ``VQA_RAD+Image+Folder``)."""
        return name, name.replace(" ", "+")

    @classmethod
    def _on_disk(cls, root: Path, name: str) -> str:
        """The spelling of ``name`` present under ``root`` (the published one if neither is)."""
        return next((s for s in cls.spellings(name) if (root / s).exists()), name)

    @classmethod
    def detect(cls, root: Path) -> bool:
        return any((root / s).is_file() for s in cls.spellings(cls.QA_FILE)) or any(
            (root / s).is_dir() for s in cls.spellings(cls.IMAGE_FOLDER)
        )

    @cached_property
    def qa_file(self) -> str:
        return self._on_disk(self.root, self.QA_FILE)

    @cached_property
    def image_folder(self) -> str:
        return self._on_disk(self.root, self.IMAGE_FOLDER)

    @cached_property
    def documents(self) -> set[str]:
        return {s for name in self.DOCUMENTS for s in self.spellings(name)}

    def qa_files(self) -> list[str]:
        return [self.qa_file]

    def image_path(self, item: dict) -> str:
        name = answer_text(item["image_name"])
        if not name or "/" in name:
            raise BadSourceFile(f"image_name {item['image_name']!r} is not a file name")
        return f"{self.image_folder}/{name}"

    def item_fields(self, item: dict, relpath: str):
        question = answer_text(item["question"])
        answer = answer_text(item["answer"])
        kind = ANSWER_TYPES.get(str(item["answer_type"]).strip().lower())
        if not question or not answer:
            raise BadSourceFile(f"empty {'question' if not question else 'answer'}")
        if kind is None:
            raise BadSourceFile(f"answer_type {item['answer_type']!r} is not CLOSED or OPEN")
        phrase = str(item.get("phrase_type", "")).strip().lower()
        fields = {
            "question": question, "answer": answer, "answer_type": kind,
            "question_type": answer_text(item.get("question_type")), "organ": answer_text(item.get("image_organ")),
            "language": "en",
        }
        qid = answer_text(item["qid"])
        if qid is None:
            raise BadSourceFile(f"no qid: qid {item['qid']!r} names no sample")
        return f"qid:{qid}", fields, "test" if phrase.startswith("test") else "train"

    def item_modality(self, item: dict, items_of_image: list[dict]) -> str:
        organ = str(item.get("image_organ", "")).strip().upper()
        if organ in self.ORGAN_MODALITY:
            return self.ORGAN_MODALITY[organ]
        for other in items_of_image:
            if "MODALITY" not in str(other.get("question_type", "")).upper():
                continue
            answer = str(other.get("answer", "")).strip().lower()
            question = str(other.get("question", "")).lower()
            if answer in ("yes", "no"):
                said = modality_from_text(question)
                if said and answer == "yes":
                    return said
            elif modality_from_text(answer):
                return modality_from_text(answer)
        return "mri"

    def read_file(self, relpath: str) -> list[Sample]:
        if relpath == self.qa_file:
            return self.read_qa_file(relpath)
        if relpath in self.documents:
            return []
        parts = PurePosixPath(relpath).parts
        is_image = PurePosixPath(relpath).suffix.lower() in self.image_suffixes
        if len(parts) == 2 and parts[0] == self.image_folder and is_image:
            return self.read_image(relpath)
        raise BadSourceFile(f"stray file: expected {self.qa_file!r} or {self.image_folder}/<image>.jpg")
