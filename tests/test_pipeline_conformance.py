"""StageGANPipeline against diffusers' pipeline contract: what `PipelineTesterMixin` (diffusers'
`tests/pipelines/test_pipelines_common.py`) checks that applies to a one-pass pipeline, written for our components.

Not applicable, hence not here: schedulers, `num_inference_steps`, guidance/CFG, callbacks, VAE slicing/tiling,
attention processors, IP adapters, caching hooks. Needing an accelerator, hence checked only as far as a CPU allows:
`enable_model_cpu_offload` (run with `device="cpu"`: the hooks, the sequence and the results; the actual moves between
CPU and GPU are not exercised), `to("cuda")`, float16 speed.
"""

import inspect
import json

import accelerate
import numpy as np
import pytest
import torch
from huggingface_hub import constants as hub_constants

from hf_stagegan import StageGANPipeline, StageGANPipelineOutput
from hf_stagegan.encoders import TextFeatures

from .test_hub import REPO_ID, files_of, put_in_cache
from .test_pipeline import LONG, SHORT, seeded

MODEL_COMPONENTS = ["text_encoder", "image_generator"]


def dummy_inputs(**overrides):
    return {"prompt": SHORT, "generator": torch.Generator().manual_seed(0), "output_type": "np", **overrides}


def components_of(pipe) -> dict:
    return {name: getattr(pipe, name) for name in ("tokenizer", "text_encoder", "image_generator")}


# ---------------------------------------------------------------------------------------------------------------------
# signature, components, outputs


def test_call_signature_has_the_diffusers_arguments():
    parameters = inspect.signature(StageGANPipeline.__call__).parameters
    for name in (
        "prompt",
        "num_images_per_prompt",
        "generator",
        "latents",
        "prompt_embeds",
        "output_type",
        "return_dict",
    ):
        assert parameters[name].default is not inspect.Parameter.empty, name  # all optional, as in diffusers
    assert parameters["output_type"].default == "pil" and parameters["return_dict"].default is True


def test_components_rebuild_the_same_pipeline(pipe):
    assert set(pipe.components) == {"tokenizer", "text_encoder", "image_generator"}
    rebuilt = StageGANPipeline(**pipe.components)
    np.testing.assert_array_equal(rebuilt(**dummy_inputs()).images, pipe(**dummy_inputs()).images)


def test_dict_and_tuple_outputs_are_equivalent(pipe):
    out = pipe(**dummy_inputs())
    assert isinstance(out, StageGANPipelineOutput)
    np.testing.assert_array_equal(out[0], out.images)  # BaseOutput indexes like the tuple
    np.testing.assert_array_equal(pipe(**dummy_inputs(), return_dict=False)[0], out.images)


def test_pt_np_pil_outputs_are_equivalent(pipe):
    pt = pipe(**dummy_inputs(output_type="pt")).images
    np_images = pipe(**dummy_inputs(output_type="np")).images
    pil = pipe(**dummy_inputs(output_type="pil")).images
    np.testing.assert_allclose(pt.permute(0, 2, 3, 1).numpy(), np_images, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(pil[0]) / 255.0, np_images[0], rtol=0, atol=1 / 255 + 1e-6)


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("num_images_per_prompt", [1, 3])
def test_num_images_per_prompt(pipe, batch, num_images_per_prompt):
    images = pipe([SHORT] * batch, num_images_per_prompt=num_images_per_prompt, output_type="np").images
    assert images.shape == (batch * num_images_per_prompt, 64, 64, 3)


def test_batch_of_unequal_prompts_matches_the_first_prompt_alone(pipe):
    # diffusers' batch test: prompts of growing length, the last one far over the tokenizer's limit
    prompts = [LONG, LONG[: len(LONG) // 2], 100 * "very long "]
    batch = pipe(prompts, generator=seeded(0, 1, 2), output_type="np").images
    single = pipe(LONG, generator=seeded(0), output_type="np").images
    assert batch.shape[0] == 3
    np.testing.assert_allclose(batch[0], single[0], rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# save / load, dtypes, variants


def test_save_load_local_logs_every_component_and_gives_the_same_images(pipe, saved, caplog):
    with caplog.at_level("INFO", logger="diffusers.pipelines.pipeline_utils"):
        loaded = StageGANPipeline.from_pretrained(saved)
    for name in ("tokenizer", "text_encoder", "image_generator"):
        assert name in caplog.text  # "Loaded <name> as <class> from `<name>` subfolder"
    # same weights; the text encoder built in memory and the loaded one may round differently (about 1e-7)
    np.testing.assert_allclose(loaded(**dummy_inputs()).images, pipe(**dummy_inputs()).images, rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_to_dtype_moves_every_model_component(pipe, dtype):
    assert all(getattr(pipe, name).dtype == torch.float32 for name in MODEL_COMPONENTS)
    pipe.to(dtype=dtype)
    assert all(getattr(pipe, name).dtype == dtype for name in MODEL_COMPONENTS)


def test_save_load_float16_keeps_dtype_and_images(pipe, tmp_path):
    pipe.to(dtype=torch.float16)
    expected = pipe(**dummy_inputs(output_type="pt")).images
    pipe.save_pretrained(tmp_path)
    loaded = StageGANPipeline.from_pretrained(tmp_path, dtype=torch.float16)
    assert all(getattr(loaded, name).dtype == torch.float16 for name in MODEL_COMPONENTS)
    got = loaded(**dummy_inputs(output_type="pt")).images
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("keyword", ["dtype", "torch_dtype"])
def test_dtype_on_load_and_its_alias(saved, keyword):
    if keyword == "torch_dtype":  # diffusers' deprecated alias still works, with its warning
        with pytest.warns(FutureWarning, match="`torch_dtype` is deprecated"):
            loaded = StageGANPipeline.from_pretrained(saved, torch_dtype=torch.bfloat16)
    else:
        loaded = StageGANPipeline.from_pretrained(saved, dtype=torch.bfloat16)
    assert all(getattr(loaded, name).dtype == torch.bfloat16 for name in MODEL_COMPONENTS)


def test_dtype_dict_on_load(saved):
    loaded = StageGANPipeline.from_pretrained(
        saved, dtype={"image_generator": torch.bfloat16, "default": torch.float16}
    )
    assert loaded.image_generator.dtype == torch.bfloat16 and loaded.text_encoder.dtype == torch.float16


def test_save_and_load_a_variant(pipe, tmp_path):
    pipe.save_pretrained(tmp_path, variant="fp16")
    for name in MODEL_COMPONENTS:
        assert [path.name for path in (tmp_path / name).glob("*.safetensors")] == ["model.fp16.safetensors"]
    loaded = StageGANPipeline.from_pretrained(tmp_path, variant="fp16")
    for name in MODEL_COMPONENTS:
        original, reloaded = getattr(pipe, name).state_dict(), getattr(loaded, name).state_dict()
        assert all(torch.equal(value, reloaded[key]) for key, value in original.items())


def test_loading_a_missing_variant_raises(saved):
    with pytest.raises(ValueError, match="You are trying to load the model files of the `variant=fp16`"):
        StageGANPipeline.from_pretrained(saved, variant="fp16")


# ---------------------------------------------------------------------------------------------------------------------
# optional components: the text encoder and tokenizer can be left out (draw from `prompt_embeds`)


def test_encode_prompt_works_in_isolation(pipe):
    components = components_of(pipe)
    text_only = StageGANPipeline(**{**components, "image_generator": None})
    with torch.no_grad():
        embeds = text_only.encode_prompt([SHORT, LONG])
    image_only = StageGANPipeline(**{**components, "tokenizer": None, "text_encoder": None})
    from_embeds = image_only(prompt_embeds=embeds, generator=seeded(0, 1), output_type="np").images
    from_prompt = pipe([SHORT, LONG], generator=seeded(0, 1), output_type="np").images
    np.testing.assert_array_equal(from_embeds, from_prompt)

    with pytest.raises(ValueError, match=r"no `image_generator` \(it was loaded with `image_generator=None`\)"):
        text_only(SHORT)


def test_from_pretrained_without_text_encoder_draws_from_prompt_embeds(pipe, saved):
    # the repro: the usual diffusers pattern for saving memory
    embeds = pipe.encode_prompt("a red bird")
    light = StageGANPipeline.from_pretrained(saved, text_encoder=None, tokenizer=None)
    assert light.text_encoder is None and light.tokenizer is None
    images = light(prompt_embeds=embeds, generator=seeded(0), output_type="np").images
    np.testing.assert_array_equal(images, pipe("a red bird", generator=seeded(0), output_type="np").images)

    with pytest.raises(ValueError, match=r"`prompt` \('a red bird'\) needs the pipeline's tokenizer and text_encoder"):
        light("a red bird")
    with pytest.raises(
        ValueError, match=r"loaded without \(`tokenizer=None`, `text_encoder=None`\)\. Pass `prompt_embeds`"
    ):
        light.encode_prompt("a red bird")


def test_save_load_optional_components_stay_none(pipe, tmp_path):
    embeds = pipe.encode_prompt([SHORT, LONG])
    pipe.tokenizer = None
    pipe.text_encoder = None
    expected = pipe(prompt_embeds=embeds, generator=seeded(0, 1), output_type="np").images
    pipe.save_pretrained(tmp_path)
    model_index = json.loads((tmp_path / "model_index.json").read_text())
    assert model_index["tokenizer"] == [None, None] and model_index["text_encoder"] == [None, None]
    assert not (tmp_path / "text_encoder").exists()

    loaded = StageGANPipeline.from_pretrained(tmp_path)
    assert loaded.tokenizer is None and loaded.text_encoder is None
    got = loaded(prompt_embeds=embeds, generator=seeded(0, 1), output_type="np").images
    np.testing.assert_array_equal(got, expected)


def test_components_passed_as_none_are_not_downloaded(pipe, saved, tmp_path, monkeypatch):
    # The cache's listing names text_encoder/ and tokenizer/, but their files were never downloaded: a pipeline loaded
    # without them must not need them (offline, asking for them fails with IncompleteSnapshotError).
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    files = files_of(saved)
    kept = {path: data for path, data in files.items() if not path.startswith(("text_encoder/", "tokenizer/"))}
    skipped = {path: data for path, data in files.items() if path not in kept}
    put_in_cache(tmp_path / "hub", REPO_ID, kept, tree_listing=True, listed_only=skipped)

    light = StageGANPipeline.from_pretrained(REPO_ID, cache_dir=tmp_path / "hub", text_encoder=None, tokenizer=None)
    embeds = pipe.encode_prompt(SHORT)
    np.testing.assert_array_equal(
        light(prompt_embeds=embeds, generator=seeded(0), output_type="np").images,
        pipe(SHORT, generator=seeded(0), output_type="np").images,
    )


# ---------------------------------------------------------------------------------------------------------------------
# model CPU offload (on a CPU-only machine: device="cpu")


def test_model_cpu_offload_installs_hooks_in_sequence_and_keeps_the_images(pipe):
    expected = pipe(**dummy_inputs()).images
    pipe.enable_model_cpu_offload(device="cpu")
    assert pipe._execution_device.type == "cpu"
    for name in MODEL_COMPONENTS:
        module = getattr(pipe, name)
        assert isinstance(module._hf_hook, accelerate.hooks.CpuOffload), name
        assert module.device.type == "cpu"
    # the chain: running the generator offloads the text encoder (the hook of each model points at the previous one)
    assert pipe.image_generator._hf_hook.prev_module_hook.model is pipe.text_encoder
    np.testing.assert_array_equal(pipe(**dummy_inputs()).images, expected)

    pipe.enable_model_cpu_offload(device="cpu")  # twice, as diffusers' test does
    np.testing.assert_array_equal(pipe(**dummy_inputs()).images, expected)


def test_model_cpu_offload_without_text_encoder(pipe):
    embeds = pipe.encode_prompt(SHORT)
    expected = pipe(**dummy_inputs()).images
    light = StageGANPipeline(**{**components_of(pipe), "tokenizer": None, "text_encoder": None})
    light.enable_model_cpu_offload(device="cpu")
    images = light(prompt_embeds=embeds, generator=torch.Generator().manual_seed(0), output_type="np").images
    np.testing.assert_array_equal(images, expected)


def test_prompt_embeds_are_checked_before_use(pipe):
    embeds = pipe.encode_prompt([SHORT, LONG])
    half = TextFeatures(sentence_embeds=embeds.sentence_embeds, word_embeds=embeds.word_embeds[:1], word_mask=None)
    with pytest.raises(ValueError, match=r"`prompt_embeds.word_embeds` must have shape \(2, num_words, 16\)"):
        pipe(prompt_embeds=half)


def test_model_card_of_a_pipeline_without_text_encoder(pipe, tmp_path):
    from hf_stagegan.hub import write_model_card

    light = StageGANPipeline(**{**components_of(pipe), "tokenizer": None, "text_encoder": None})
    text = write_model_card(tmp_path, pipeline=light, repo_id=REPO_ID).text
    assert "| stage resolutions | 16 px -> 32 px -> 64 px |" in text and "text encoder" not in text.split("## Model")[1]
