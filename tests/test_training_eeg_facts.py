"""The EEG facts a run's processor is fitted on come from the training rows that hold an EEG epoch, row by row."""

import pytest
from datasets import Dataset, Features, List, Value

from analysis_tiny import CHANNELS, TASK, trio_task
from multimed_hf.training.assembly import AssemblyError, eeg_processor_from_data

FEATURES = Features({"eeg": List(List(Value("float32"))), "sfreq": Value("float32"),
                     "channel_names": List(Value("string"))})


def _rows(epochs):
    """One row per ``(n_samples, sfreq)``, or ``None`` for a row without the EEG modality."""
    return Dataset.from_dict({
        "eeg": [None if e is None else [[0.5] * e[0]] * len(CHANNELS) for e in epochs],
        "sfreq": [None if e is None else e[1] for e in epochs],
        "channel_names": [None if e is None else CHANNELS for e in epochs],
    }, features=FEATURES)


def test_rows_without_eeg_are_skipped():
    rows = _rows([None, (64, 64.0), None, (96, 32.0), (40, 64.0), None])
    with trio_task():
        processor, notes = eeg_processor_from_data({TASK: rows})
    # lowest rate of the rows with an epoch, longest epoch at that rate: 96 samples at 32 Hz = 3 s
    assert processor.sfreq == 32.0 and processor.n_times == 96
    assert list(processor.channels) == CHANNELS
    assert "1 channel set(s)" in notes[0]


def test_only_the_selected_rows_count():
    rows = _rows([(200, 64.0), None, (64, 64.0), (80, 64.0)])
    with trio_task():
        processor, _ = eeg_processor_from_data({TASK: rows.select([3, 1, 2])})
    assert processor.n_times == 80


def test_no_row_with_an_epoch_raises():
    with trio_task(), pytest.raises(AssemblyError, match=f"task '{TASK}': no training row has an EEG epoch"):
        eeg_processor_from_data({TASK: _rows([None, None])})
