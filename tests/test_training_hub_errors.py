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


def test_train_push_to_hub_uploads_the_multimed_card_and_the_results(fake_hub, tmp_path):
    # before: the Trainer pushed at save_model, before evaluation, with its generic card ("fine-tuned version of []
    # on an unknown dataset"): all_results.json, run_info.json, the predictions and the MultiMed card never got there
    import balancing_tiny as bt
    from multimed_hf.training.run import train_model
    from training_tiny import brain_tumor

    data = bt.write_built_folder(tmp_path / "multimed", {"brain_tumor": {
        "train": brain_tumor(8), "test": brain_tumor(4, seed=2, prefix="te")}})
    result = train_model(data=data, tasks=["brain_tumor"], family="unimodal", encoders="small", hidden_size=16,
                         output_dir=str(tmp_path / "run"), max_steps=1, per_device_train_batch_size=4, use_cpu=True,
                         eval_strategy="no", save_strategy="no", bootstrap_samples=0, report_to="none",
                         push_to_hub=True, hub_model_id="org/bt-run", hub_token=fake_hub.token)
    files = fake_hub.files("org/bt-run", repo_type="model")
    assert {"all_results.json", "run_info.json", "metrics_long.json", "predictions/brain_tumor-test.parquet",
            "model.safetensors", "README.md"} <= set(files)
    card = files["README.md"].decode()
    assert "fine-tuned version of" not in card and card == (result.output_dir / "README.md").read_text()
    accuracy = result.metrics["test_brain_tumor_accuracy"]
    assert "Measured on the `test` split." in card and f"| brain_tumor | accuracy | {accuracy:.4g} |" in card


def test_push_to_hub_without_a_reachable_hub_is_one_error_naming_the_repository(offline, tmp_path):
    # before: the HTTP client's ConnectError traceback from Trainer.init_hf_repo, before any training
    from transformers import TrainingArguments

    from multimed_hf.training.trainer import MultiMedTrainer
    from training_tiny import tiny_model

    args = TrainingArguments(output_dir=str(tmp_path / "run"), push_to_hub=True, hub_model_id="me/run",
                             use_cpu=True, report_to=[])
    with pytest.raises(ValueError, match=r"--push_to_hub: the Hub repository 'me/run' could not be created "
                                         r"\(OfflineModeIsEnabled: .*leave --push_to_hub out"):
        MultiMedTrainer(model=tiny_model(["brain_tumor"]), args=args)


def test_an_upload_the_hub_does_not_take_is_one_error_naming_the_repository(offline):
    # before: multimed push (and MultiMedModel.push_to_hub) printed the HTTP client's 78-line traceback
    from multimed_hf.hub_upload import HubUploadError, upload_files

    with pytest.raises(HubUploadError, match=r"upload to the Hub dataset repository 'me/multimed' at .* failed "
                                             r"\(OfflineModeIsEnabled: .*check the network, HF_ENDPOINT"):
        upload_files("me/multimed", {"README.md": b"card"}, repo_type="dataset", commit_message="push")
