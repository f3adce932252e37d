"""A Hub encoder or checkpoint that cannot be fetched is a clear error naming it and what to do, not a traceback."""

import huggingface_hub.constants
import pytest

from multimed_hf.training.assembly import HubLoadError, _image_processor, _tokenizer, loading_from_hub
from multimed_hf.training.run import RunError, evaluate_checkpoint

MISSING = "multimed-hf-tests/no-such-model"


@pytest.fixture
def offline(monkeypatch):
    """No network for the Hub client (as HF_HUB_OFFLINE=1): fails at once instead of retrying."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_an_unreachable_image_processor_or_tokenizer_names_itself_and_the_way_out(offline):
    with pytest.raises(HubLoadError, match=rf"image processor of '{MISSING}' could not be loaded.*--encoders small"):
        _image_processor(MISSING, 224)
    with pytest.raises(HubLoadError, match=rf"the text tokenizer of '{MISSING}'.*hf download"):
        _tokenizer(MISSING, "text", [])
    assert _image_processor(None, 32) is not None  # no Hub id: nothing fetched


def test_other_errors_pass_through_untouched():
    with pytest.raises(KeyError):
        with loading_from_hub("the thing", "x"):
            raise KeyError("not a loading failure")


def test_a_checkpoint_that_is_neither_a_folder_nor_reachable(offline, tmp_path):
    with pytest.raises(RunError, match="no such folder"):
        evaluate_checkpoint(str(tmp_path / "absent"), tmp_path, output_dir=str(tmp_path / "out"))
    with pytest.raises(HubLoadError, match=rf"the checkpoint '{MISSING}'.*multimed train"):
        evaluate_checkpoint(MISSING, tmp_path, output_dir=str(tmp_path / "out"))


def test_a_data_hub_id_that_cannot_be_reached_says_so(offline, monkeypatch):
    # before: datasets' ConnectionError traceback ("Couldn't reach ... on the Hub"), or "no such folder" for an id
    import datasets.config

    from multimed_hf.training.loading import DataLoadingError, load_task_data

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(DataLoadingError, match=r"'multimed-hf-tests/no-such-data': no such folder, and the Hub could "
                                               r"not be reached \(Couldn't reach"):
        load_task_data("multimed-hf-tests/no-such-data", ["brain_tumor"])
