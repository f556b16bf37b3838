"""The generator's inference shortcuts compute the textbook function: phase convolutions for upsampling + 3x3 conv,
batch norm folded into the conv, and eval weights cached only while the parameters they come from are unchanged."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hf_stagegan import StageGANGenerator
from hf_stagegan.modeling_stagegan import ConvNorm, UpBlock, glu

from .conftest import tiny_config


def randomise_norms(module: nn.Module, seed: int = 0):
    """Non-trivial batch-norm affine parameters and running statistics, so that folding them is exercised."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for norm in module.modules():
            if isinstance(norm, nn.BatchNorm2d):
                for tensor in (norm.weight, norm.bias, norm.running_mean):
                    tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.5)
                norm.running_var.copy_(torch.rand(norm.running_var.shape, generator=generator) + 0.5)


def textbook_upblock(block: UpBlock, x: torch.Tensor, mode: str) -> torch.Tensor:
    """x2 upsampling, 3x3 conv, batch norm (batch statistics in training, running ones in eval), GLU, written out."""
    conv, norm = block[1].conv, block[1].norm
    up = F.interpolate(x, scale_factor=2, mode=mode, **({"align_corners": False} if mode == "bilinear" else {}))
    out = F.batch_norm(
        F.conv2d(up, conv.weight, conv.bias, padding=1), norm.running_mean, norm.running_var, norm.weight, norm.bias,
        training=block.training, momentum=norm.momentum, eps=norm.eps,
    )
    return F.glu(out, dim=1)


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(3, 6, 5, 7), (1, 6, 2, 1)])
def test_upblock_equals_upsample_conv_norm_glu(training, shape, mode):
    torch.manual_seed(0)
    block = UpBlock(shape[1], 5, mode).double()
    randomise_norms(block)
    block.train(training)
    reference = copy.deepcopy(block)  # its own batch-norm buffers: a train-mode forward updates them
    # channels-last, as everywhere in the generator
    x = torch.randn(*shape, dtype=torch.float64).contiguous(memory_format=torch.channels_last).requires_grad_()

    out = block(x)
    expected = textbook_upblock(reference, x, mode)
    assert out.shape == (shape[0], 5, 2 * shape[2], 2 * shape[3])
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    # the same gradients for the input and the 3x3 kernel (training updates the checkpoint's own weights)
    grads = torch.autograd.grad(out.square().sum(), [x, block[1].conv.weight])
    expected_grads = torch.autograd.grad(expected.square().sum(), [x, reference[1].conv.weight])
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-10)
    if training:  # and the same running statistics
        torch.testing.assert_close(block[1].norm.running_var, reference[1].norm.running_var)
    # the mode is what the block uses: the other mode's textbook function differs
    other = textbook_upblock(reference, x, "bilinear" if mode == "nearest" else "nearest")
    assert not torch.allclose(out, other, atol=1e-3)


def test_generator_upsampling_reaches_every_block_and_keeps_the_checkpoint_format():
    # the same weights load into either mode (no parameter depends on it); the bilinear generator draws other images
    torch.manual_seed(0)
    config = tiny_config()
    nearest = StageGANGenerator(config).eval()
    config.generator_upsampling = "bilinear"
    bilinear = StageGANGenerator(config).eval()
    bilinear.load_state_dict(nearest.state_dict())
    modes = [module[0].mode for module in bilinear.modules() if isinstance(module, UpBlock)]
    assert modes == ["bilinear"] * 5  # level 1's three, levels 2 and 3's one each
    inputs = dict(noise=torch.randn(2, config.z_dim), sentence_embeds=torch.randn(2, config.text_embed_dim),
                  word_embeds=torch.randn(2, 4, config.text_embed_dim))
    with torch.no_grad():
        images = [model(**inputs).images for model in (nearest, bilinear)]
    for level in range(3):  # a freshly initialised generator draws faint images: compare relative to their size
        near, smooth = images[0][level], images[1][level]
        assert (near - smooth).norm() > 1e-3 * near.norm(), level


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_glu_gradient_keeps_channels_last(dtype):
    # with a gradient, glu is a * sigmoid(b): aten's glu_backward is 2-3x slower on the CPU and returns NCHW for a
    # channels-last input, on which batch norm's backward is ~6x slower
    x = torch.randn(2, 8, 5, 5, dtype=dtype).contiguous(memory_format=torch.channels_last).requires_grad_()
    out = glu(x)
    tolerance = {"rtol": 1e-6, "atol": 1e-7} if dtype == torch.float32 else {"rtol": 1e-2, "atol": 1e-2}
    torch.testing.assert_close(out, torch.nn.functional.glu(x, dim=1), **tolerance)
    grad_out = torch.randn_like(out)
    (grad,) = torch.autograd.grad(out, x, grad_out)
    (expected,) = torch.autograd.grad(torch.nn.functional.glu(x, dim=1), x, grad_out)
    assert grad.is_contiguous(memory_format=torch.channels_last) and not expected.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(grad, expected, **tolerance)
    # without a gradient (inference) it is aten's fused kernel, to the bit
    with torch.no_grad():
        assert torch.equal(glu(x), torch.nn.functional.glu(x, dim=1))


def test_eval_conv_norm_folds_the_batch_norm():
    torch.manual_seed(0)
    layer = ConvNorm(4, 6).double()
    randomise_norms(layer)
    layer.eval()
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(layer(x), layer.norm(layer.conv(x)), rtol=0, atol=1e-12)


def eval_images(generator, inputs):
    with torch.inference_mode():
        return generator(**inputs).images[-1]


def fresh_images(generator, inputs):
    """The images of a copy that has never cached anything."""
    return eval_images(copy.deepcopy(generator), inputs)


def test_cached_eval_weights_follow_every_parameter_update():
    torch.manual_seed(0)
    config = tiny_config(initializer_range=0.1)
    generator = StageGANGenerator(config).eval()
    randomise_norms(generator)
    inputs = {
        "noise": torch.randn(2, config.z_dim),
        "sentence_embeds": torch.randn(2, config.text_embed_dim),
        "word_embeds": torch.randn(2, 4, config.text_embed_dim),
    }
    first = eval_images(generator, inputs)
    assert torch.equal(eval_images(generator, inputs), first)  # served from the cache: the same

    # an optimizer step on the weights
    generator.train()
    generator(**inputs).images[-1].square().mean().backward()
    torch.optim.SGD(generator.parameters(), lr=1.0).step()
    generator.eval()
    stepped = eval_images(generator, inputs)
    assert not torch.equal(stepped, first)
    torch.testing.assert_close(stepped, fresh_images(generator, inputs), rtol=0, atol=0)

    # a train-mode forward without a step updates only the batch-norm running statistics
    generator.train()
    with torch.no_grad():
        generator(**inputs)
    generator.eval()
    torch.testing.assert_close(eval_images(generator, inputs), fresh_images(generator, inputs), rtol=0, atol=0)

    # load_state_dict and an EMA-style in-place update
    reloaded = StageGANGenerator(config).eval()
    eval_images(reloaded, inputs)
    reloaded.load_state_dict(generator.state_dict())
    torch.testing.assert_close(eval_images(reloaded, inputs), eval_images(generator, inputs), rtol=0, atol=0)
    with torch.no_grad():
        for parameter in reloaded.parameters():
            parameter.lerp_(torch.zeros_like(parameter), 0.1)
    torch.testing.assert_close(eval_images(reloaded, inputs), fresh_images(reloaded, inputs), rtol=0, atol=0)

    # a round trip through another dtype
    generator.to(torch.bfloat16).to(torch.float32)
    torch.testing.assert_close(eval_images(generator, inputs), fresh_images(generator, inputs), rtol=0, atol=0)


def test_eval_weights_are_not_cached_while_autograd_records():
    torch.manual_seed(0)
    config = tiny_config()
    generator = StageGANGenerator(config).eval()
    noise = torch.randn(2, config.z_dim, requires_grad=True)
    eval_images(generator, {"noise": noise.detach()} | {"num_levels": 1})  # fills the cache in inference mode
    image = generator(noise=noise, num_levels=1).images[0]  # with grad: built afresh, differentiable
    (grad,) = torch.autograd.grad(image.sum(), noise)
    assert grad.abs().sum() > 0
    weight = generator.level1.upsample[0][1].conv.weight
    assert torch.autograd.grad(generator(noise=noise, num_levels=1).images[0].sum(), weight)[0].abs().sum() > 0
