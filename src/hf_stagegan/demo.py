"""`hf-stagegan demo`: a Gradio app over a StageGAN pipeline, from a local folder or a Hub id.

```bash
pip install "hf-stagegan[demo]"
hf-stagegan demo --model org/stagegan-cub                    # http://127.0.0.1:7860
python -m hf_stagegan.demo --model ./stagegan-synthbirds --port 7861
```

```python
from hf_stagegan.demo import load_demo

load_demo("org/stagegan-cub").launch()                        # what an exported Space's app.py runs
```

A prompt, the number of images, a seed and the truncation threshold; a gallery of the last level's images; and, for the
selected image, the three levels side by side (x1 from noise, x2 with the sentence, x3 with the words), each enlarged to
the last level's size (at least 256 px) with nearest-neighbour so that the refinement shows pixel for pixel. Image `j`
is drawn with seed `seed + j`, as `hf-stagegan generate` draws it. Input the pipeline refuses is refused in the page
with the pipeline's own message. The pipeline is loaded, and run once, before the server starts. Nothing is fetched
from the network: no analytics, no share link, Gradio's bundled fonts.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import gradio as gr
import PIL.Image
import torch

from .hub import card_sample_prompts
from .pipeline_stagegan import StageGANPipeline

# when the model card has no sample prompts: CUB-style captions
DEFAULT_EXAMPLES = [
    "this bird has a red body and black wings",
    "a small blue bird with a white belly",
    "a yellow bird with black wings and a short beak",
]
MAX_IMAGES = 8  # per request: a CPU draws a 256 px image in a fraction of a second, a batch of 8 in a few
LEVEL_DISPLAY_SIDE = 256  # the levels are shown at least this large (nearest-neighbour), whatever the model's sizes


def example_prompts(model: str | os.PathLike, revision: str | None = None) -> list[str]:
    """The model card's sample prompts (written from the training's validation captions), else `DEFAULT_EXAMPLES`."""
    return card_sample_prompts(model, revision=revision) or list(DEFAULT_EXAMPLES)


def warm_up(pipe: StageGANPipeline) -> None:
    """One generation, so that the first request does not pay for the first forward pass (allocations, kernel choice)."""
    pipe(DEFAULT_EXAMPLES[0], generator=torch.Generator().manual_seed(0), output_type="np")


def _refusal(message: str) -> gr.Error:
    """An error shown in the page; no traceback in the server's log (the input was bad, not the server)."""
    return gr.Error(message, print_exception=False)


def generate(
    pipe: StageGANPipeline, prompt, num_images, seed, truncation, max_images: int = MAX_IMAGES
) -> tuple[list[PIL.Image.Image], list[tuple[PIL.Image.Image, PIL.Image.Image, PIL.Image.Image]]]:
    """
    What the Generate button runs: `num_images` images of `prompt`, image `j` from seed `seed + j`, noise truncated at
    `truncation` (0 or None: off). Returns the last level's images and, per image, its three levels enlarged to the
    last level's size (at least `LEVEL_DISPLAY_SIDE`). Bad input raises `gr.Error` with the pipeline's own message.
    """
    if isinstance(num_images, float) and num_images.is_integer():
        num_images = int(num_images)  # a slider's value may come as 3.0
    if isinstance(num_images, int) and num_images > max_images:
        raise _refusal(f"`num_images_per_prompt` must be <= {max_images} in this demo, got {num_images}.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise _refusal(f"`seed` must be an integer >= 0, got {seed!r}.")
    # one generator per image; anything but an int is left to the pipeline to refuse
    generator = (
        [torch.Generator().manual_seed(seed + j) for j in range(num_images)] if isinstance(num_images, int) else None
    )
    try:
        out = pipe(
            prompt,
            num_images_per_prompt=num_images,
            generator=generator,
            truncation_threshold=truncation or None,
            return_all_levels=True,
        )
    except (TypeError, ValueError) as error:
        raise _refusal(str(error)) from error
    side = max(out.images[0].width, LEVEL_DISPLAY_SIDE)
    levels = [
        tuple(level.resize((side, side), PIL.Image.NEAREST) for level in image_levels)
        for image_levels in zip(*out.level_images)
    ]
    return out.images, levels


def build_demo(
    pipe: StageGANPipeline,
    examples: Sequence[str] | None = None,
    max_images: int = MAX_IMAGES,
    model_name: str | os.PathLike | None = None,
) -> gr.Blocks:
    r"""
    The Gradio app of `pipe` (loaded beforehand: requests pay only for their images). Launch it with `.launch()`.

    Args:
        pipe ([`StageGANPipeline`]): a pipeline with its tokenizer, text encoder and generator.
        examples (`Sequence[str]`, *optional*): example prompts, default `DEFAULT_EXAMPLES`.
        max_images (`int`, defaults to 8): the most images one request may ask for.
        model_name (`str`, *optional*): the Hub id or folder, shown in the title (a Hub id is linked).
    """
    missing = [name for name in ("tokenizer", "text_encoder", "image_generator") if getattr(pipe, name) is None]
    if missing:
        raise ValueError(
            f"The demo draws from prompts: `pipe` needs a tokenizer, text encoder and generator; it has no {missing}."
        )
    if isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1:
        raise ValueError(f"`max_images` must be an int >= 1, got {max_images!r}.")
    examples = list(examples or DEFAULT_EXAMPLES)
    r1, r2, r3 = pipe.image_generator.config.stage_resolutions
    name = str(model_name) if model_name is not None else pipe.name_or_path or "StageGAN"
    is_hub_id = model_name is not None and not Path(model_name).exists()
    shown_name = f"[{name}](https://huggingface.co/{name})" if is_hub_id else f"`{name}`"

    def run(prompt, num_images, seed, truncation):
        images, levels = generate(pipe, prompt, num_images, seed, truncation, max_images)
        gallery = [(image, f"seed {seed + j}") for j, image in enumerate(images)]
        return gallery, levels, *levels[0]

    def select(levels, event: gr.SelectData):
        return levels[event.index]

    with gr.Blocks(title=f"StageGAN · {name}", analytics_enabled=False) as demo:
        gr.Markdown(
            f"# StageGAN · {shown_name}\n"
            "A three-level text-to-image GAN (GR-GAN, patent CN113781598B): level 1 draws a "
            f"{r1} px image from noise alone, level 2 refines it to {r2} px with the sentence, level 3 to {r3} px with "
            "the words. Image *j* is drawn with seed *seed + j*, as `hf-stagegan generate` draws it."
        )
        with gr.Row():
            with gr.Column(scale=1):
                prompt = gr.Textbox(label="Prompt", placeholder=examples[0], lines=2, elem_id="prompt")
                num_images = gr.Slider(
                    1, max_images, value=min(4, max_images), step=1, precision=0, label="Images", elem_id="num-images"
                )
                seed = gr.Number(value=0, precision=0, minimum=0, maximum=2**32 - 1, label="Seed", elem_id="seed")
                truncation = gr.Slider(
                    0.0,
                    2.0,
                    value=0.0,
                    step=0.05,
                    label="Truncation (0 = off)",
                    info="resample noise values beyond it: less variety, more typical images",
                    elem_id="truncation",
                )
                button = gr.Button("Generate", variant="primary", elem_id="generate")
                gr.Examples([[example] for example in examples], inputs=[prompt], label="Example prompts")
            with gr.Column(scale=2):
                gallery = gr.Gallery(
                    label=f"Level 3 · {r3} px",
                    columns=4,
                    height="auto",
                    format="png",
                    object_fit="contain",
                    elem_id="gallery",
                )
        gr.Markdown("### The three levels of the selected image")
        with gr.Row():
            level_images = [
                gr.Image(label=label, format="png", interactive=False, elem_id=f"level-{level}")
                for level, label in enumerate(
                    [
                        f"Level 1 · {r1} px, from noise",
                        f"Level 2 · {r2} px, + sentence",
                        f"Level 3 · {r3} px, + words",
                    ],
                    start=1,
                )
            ]
        levels = gr.State([])

        inputs, outputs = [prompt, num_images, seed, truncation], [gallery, levels, *level_images]
        button.click(run, inputs, outputs, api_name="generate")
        prompt.submit(run, inputs, outputs, api_name=False)
        gallery.select(select, levels, level_images, api_name=False)
    return demo


def load_demo(
    model: str | os.PathLike,
    revision: str | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    examples: Sequence[str] | None = None,
    max_images: int = MAX_IMAGES,
) -> gr.Blocks:
    """Loads the pipeline of `model` (Hub id or folder) on `device`, runs it once, and returns its app (`build_demo`)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = StageGANPipeline.from_pretrained(model, revision=revision, dtype=dtype).to(device)
    pipe.set_progress_bar_config(disable=True)
    examples = examples or example_prompts(model, revision=revision)
    demo = build_demo(pipe, examples=examples, max_images=max_images, model_name=model)
    warm_up(pipe)
    return demo


__all__ = [
    "DEFAULT_EXAMPLES",
    "LEVEL_DISPLAY_SIDE",
    "build_demo",
    "example_prompts",
    "generate",
    "load_demo",
    "warm_up",
]


if __name__ == "__main__":
    from .cli import main

    sys.exit(main(["demo", *sys.argv[1:]]))
