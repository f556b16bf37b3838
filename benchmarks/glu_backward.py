"""The generator's GLU, forward + backward: aten's `glu` against `a * sigmoid(b)` (what `modeling_stagegan.glu` does
when a gradient is recorded), on the generator's channels-last feature maps, fp32 and bf16.

    python benchmarks/glu_backward.py                            # the CPU main job's maps (64 px, 32 channels, batch 16)
    python benchmarks/glu_backward.py --resolution 256 --batch_size 8 --generator_channels 32   # the 256 px recipe's

For every GLU input shape of one training step of a `StageGANGenerator` (found by running one step with hooks on
`modeling_stagegan.glu`), each round times both forms in turn (so their ratio holds when the machine's speed drifts):
`aten` is `F.glu` with its gradient put back into channels-last (the generator's code before, which the batch norm
below it needs), `decomposed` is `modeling_stagegan.glu` itself (`value * sigmoid(gate)`). Gradients are checked to
agree first. One JSON line per shape and dtype, then one per dtype for the whole step's GLUs (the sum of the medians).
"""

import argparse

import torch
import torch.nn.functional as F
from common import emit, machine, seconds, spread

from hf_stagegan import StageGANConfig, StageGANGenerator, modeling_stagegan


def aten(x: torch.Tensor) -> torch.Tensor:
    return F.glu(x, dim=1)


# the library's own function: with a gradient to record it computes value * sigmoid(gate)
FORMS = {"aten": aten, "decomposed": modeling_stagegan.glu}


def glu_input_shapes(config: StageGANConfig, batch_size: int) -> list[tuple[int, ...]]:
    """The shapes `modeling_stagegan.glu` sees in one training-mode forward of the generator, in call order."""
    shapes, original = [], modeling_stagegan.glu

    def recording(hidden_states):
        shapes.append(tuple(hidden_states.shape))
        return original(hidden_states)

    modeling_stagegan.glu = recording
    try:
        generator = StageGANGenerator(config).train()
        generator(
            noise=torch.randn(batch_size, config.z_dim),
            sentence_embeds=torch.randn(batch_size, config.text_embed_dim),
            word_embeds=torch.randn(batch_size, 8, config.text_embed_dim),
        )
    finally:
        modeling_stagegan.glu = original
    return shapes


def forward_backward(form, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    (result,) = torch.autograd.grad(form(x), x, grad)
    if form is aten:  # aten's backward hands back NCHW; the batch norm before the GLU wants channels-last
        result = result.contiguous(memory_format=torch.channels_last)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=64, help="the last level's side")
    parser.add_argument("--generator_channels", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    args = parser.parse_args(argv)
    for name in ("resolution", "generator_channels", "batch_size", "rounds", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    side = args.resolution
    config = StageGANConfig(stage_resolutions=[side // 4, side // 2, side], generator_channels=args.generator_channels)
    shapes = glu_input_shapes(config, args.batch_size)
    emit(benchmark="glu_backward", **machine(device), shapes=len(shapes), batch_size=args.batch_size, resolution=side)

    torch.manual_seed(0)
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        totals = dict.fromkeys(FORMS, 0.0)
        for shape in sorted(set(shapes), key=shapes.index):
            count = shapes.count(shape)
            x = torch.randn(shape, dtype=dtype).contiguous(memory_format=torch.channels_last).requires_grad_()
            grad = torch.randn(shape[0], shape[1] // 2, *shape[2:], dtype=dtype)
            grad = grad.contiguous(memory_format=torch.channels_last)
            results = {name: forward_backward(form, x, grad) for name, form in FORMS.items()}  # also the warm-up
            tolerance = 1e-5 if dtype == torch.float32 else 2e-2
            difference = (results["aten"].float() - results["decomposed"].float()).abs().max().item()
            if difference > tolerance * max(1.0, results["aten"].float().abs().max().item()):
                raise AssertionError(f"the two forms' gradients differ by {difference} at {shape} {dtype_name}")
            times = {name: [] for name in FORMS}
            for _ in range(args.rounds):
                for name, form in FORMS.items():
                    times[name].append(seconds(lambda form=form, x=x, grad=grad: forward_backward(form, x, grad), device))
            medians = {name: spread(values, 1e3)["median"] for name, values in times.items()}
            for name in FORMS:
                totals[name] += count * medians[name]
            emit(
                benchmark="glu_backward", dtype=dtype_name, shape=list(shape), calls_per_step=count,
                aten_ms=medians["aten"], decomposed_ms=medians["decomposed"],
                decomposed_vs_aten=medians["decomposed"] / medians["aten"],
                aten_ms_range=[min(times["aten"]) * 1e3, max(times["aten"]) * 1e3],
                decomposed_ms_range=[min(times["decomposed"]) * 1e3, max(times["decomposed"]) * 1e3],
            )
        emit(
            benchmark="glu_backward", dtype=dtype_name, part="every GLU of one generator step",
            aten_ms=totals["aten"], decomposed_ms=totals["decomposed"],
            decomposed_vs_aten=totals["decomposed"] / totals["aten"],
        )


if __name__ == "__main__":
    main()
