"""A synthetic sample in Symptom2Disease's layout: ``Symptom2Disease.csv`` with an unnamed index column, ``label``
and ``text`` (first-person symptom descriptions).

Class-dependent signal: each text is built from its diagnosis's own symptoms, in varied wording. Bad inputs: a
label the source does not have, an empty text, the same text under two labels (a label conflict), and an exact
repeat of a text under its own label (kept, grouped).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from dataset_scripts.sample_sources._draw import write_provenance

__all__ = ["FOLDER", "make", "make_symptom2disease", "SYMPTOMS"]

FOLDER = "symptom2disease"

#: A few symptoms per diagnosis, under the publisher's label spellings.
SYMPTOMS = {
    "Psoriasis": ("a dry scaly rash", "silvery patches on my elbows", "itchy skin that peels", "pitted nails"),
    "Varicose Veins": ("swollen twisted veins on my legs", "aching calves", "heavy legs by evening", "itchy veins"),
    "Typhoid": ("a fever that keeps rising", "stomach pain", "constipation", "a rash of rose spots"),
    "Chicken pox": ("itchy blisters all over", "a mild fever", "tiredness", "red spots that crust over"),
    "Impetigo": ("honey-coloured crusts near my nose", "red sores", "blisters that burst", "itchy face"),
    "Dengue": ("a high fever", "pain behind my eyes", "severe joint pain", "a rash and bleeding gums"),
    "Fungal infection": ("an itchy red ring on my skin", "scaling between my toes", "a spreading rash", "cracked skin"),
    "Common Cold": ("a runny nose", "sneezing", "a scratchy throat", "a mild cough"),
    "Pneumonia": ("a cough with phlegm", "shortness of breath", "chest pain when breathing", "chills and fever"),
    "Dimorphic Hemorrhoids": (
        "pain when passing stool", "bleeding after bowel movements", "a lump near the anus", "itching",
    ),
    "Arthritis": ("stiff joints in the morning", "swollen knees", "joint pain", "trouble walking"),
    "Acne": ("pimples on my face", "blackheads", "oily skin", "painful bumps on my back"),
    "Bronchial Asthma": ("wheezing", "a tight chest", "coughing at night", "breathlessness after exercise"),
    "Hypertension": ("headaches at the back of my head", "dizziness", "a pounding heartbeat", "blurred vision"),
    "Migraine": (
        "a throbbing headache on one side", "sensitivity to light", "nausea", "flashing lights before the pain",
    ),
    "Cervical spondylosis": ("a stiff neck", "neck pain spreading to my shoulder", "numb fingers", "headaches"),
    "Jaundice": ("yellow eyes", "yellow skin", "dark urine", "pale stools"),
    "Malaria": ("fever with shaking chills", "sweating in cycles", "headache", "vomiting after the chills"),
    "urinary tract infection": ("burning when I urinate", "urinating often", "cloudy urine", "lower belly pain"),
    "allergy": ("sneezing fits", "watery itchy eyes", "a stuffy nose", "hives after eating"),
    "gastroesophageal reflux disease": (
        "heartburn after meals", "a sour taste", "food coming back up", "chest burning at night",
    ),
    "drug reaction": ("a rash after starting a new medicine", "itching", "swollen lips", "fever after the tablets"),
    "peptic ulcer disease": ("a burning stomach ache", "pain that eases when I eat", "bloating", "dark stools"),
    "diabetes": ("constant thirst", "urinating a lot", "weight loss", "blurred vision and tiredness"),
}
_OPENERS = ("I have been having", "For a week I have had", "Lately I notice", "My problem is", "I suffer from")


def _text(label: str, rng: np.random.Generator) -> str:
    symptoms = list(SYMPTOMS[label])
    rng.shuffle(symptoms)
    chosen = symptoms[: int(rng.integers(2, 5))]
    opener = _OPENERS[int(rng.integers(len(_OPENERS)))]
    return f"{opener} {', '.join(chosen[:-1])} and {chosen[-1]}."


def make_symptom2disease(root, *, per_label=3, seed=17, bad_files=True) -> Path:
    """Write the sample under ``root`` and return it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    seen = set()
    for label in SYMPTOMS:
        while sum(1 for r in rows if r[0] == label) < per_label:
            text = _text(label, rng)
            if text not in seen:  # repeats are added on purpose below, not by chance
                seen.add(text)
                rows.append((label, text))
    if bad_files:
        rows.append(("Leprosy", "Numb patches on my skin and weak hands."))  # not one of the source's labels
        rows.append(("Migraine", ""))  # no text
        rows.append(("Dengue", rows[0][1].upper()))  # a Psoriasis text under another label: a label conflict
        acne = next(text for label, text in rows if label == "Acne")
        rows.append(("Acne", "  " + acne.replace(" ", "  ")))  # the same text again, spaced out: kept, grouped
    with (root / "Symptom2Disease.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["", "label", "text"])
        writer.writerows((i, label, text) for i, (label, text) in enumerate(rows))
    write_provenance(root, "generated by dataset_scripts/sample_sources/symptom2disease.py (not real patient texts)")
    return root


make = make_symptom2disease
