"""STSTNet's structure is the original release's (without needing its data).

The release's checkpoints are checked against its logged predictions in
``test_ststnet_golden.py``; here the layer names, shapes, parameter count and the exact order of
operations are checked against an independent numpy forward pass written from main.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engines.models import create_model
from engines.models.ststnet import MEGC2019_LABELS

# The release's state_dict: name -> shape (STSTNet_Weights/*.pth hold exactly these).
RELEASE_STATE = {
    "conv1.weight": (3, 3, 3, 3), "conv1.bias": (3,),
    "conv2.weight": (5, 3, 3, 3), "conv2.bias": (5,),
    "conv3.weight": (8, 3, 3, 3), "conv3.bias": (8,),
    **{
        f"bn{i}.{field}": shape
        for i, channels in ((1, 3), (2, 5), (3, 8))
        for field, shape in (
            ("weight", (channels,)), ("bias", (channels,)), ("running_mean", (channels,)),
            ("running_var", (channels,)), ("num_batches_tracked", ()),
        )
    },
    "fc.weight": (3, 400), "fc.bias": (3,),
}  # fmt: skip


def test_state_dict_names_and_shapes_are_the_releases() -> None:
    model = create_model("ststnet")
    state = model.state_dict()
    assert {name: tuple(t.shape) for name, t in state.items()} == RELEASE_STATE
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 1683


def _randomised(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights *and* BatchNorm statistics, so every layer's role shows in the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            values = torch.randn(tensor.shape, generator=generator)
            tensor.copy_(values.abs() + 0.5 if name.endswith("running_var") else values)
    return model


def _numpy_ststnet(x: np.ndarray, state: dict[str, np.ndarray]) -> np.ndarray:
    """main.py's forward in eval mode, op by op: per stream conv(pad 2) -> ReLU -> BN -> maxpool
    3/3 pad 1; concat; avgpool 2; flatten (C, H, W order); linear."""
    streams = []
    for i in (1, 2, 3):
        weight, bias = state[f"conv{i}.weight"], state[f"conv{i}.bias"]
        padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
        size = padded.shape[-1] - 2
        conv = np.zeros((x.shape[0], weight.shape[0], size, size))
        for dy in range(3):
            for dx in range(3):
                window = padded[:, :, dy : dy + size, dx : dx + size]
                conv += np.einsum("nchw,oc->nohw", window, weight[:, :, dy, dx])
        conv += bias[None, :, None, None]
        relu = np.maximum(conv, 0.0)
        scale = state[f"bn{i}.weight"] / np.sqrt(state[f"bn{i}.running_var"] + 1e-5)
        bn = (relu - state[f"bn{i}.running_mean"][None, :, None, None]) * scale[None, :, None, None]
        bn += state[f"bn{i}.bias"][None, :, None, None]
        padded_bn = np.pad(bn, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
        out = (padded_bn.shape[-1] - 3) // 3 + 1
        pooled = np.full((x.shape[0], bn.shape[1], out, out), -np.inf)
        for dy in range(3):
            for dx in range(3):
                pooled = np.maximum(pooled, padded_bn[:, :, dy : dy + 3 * out : 3, dx : dx + 3 * out : 3])
        streams.append(pooled)
    joined = np.concatenate(streams, axis=1)
    n, c, h, w = joined.shape
    averaged = joined.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))
    return averaged.reshape(n, -1) @ state["fc.weight"].T + state["fc.bias"]


@pytest.mark.parametrize("seed", [0, 1])
def test_forward_matches_an_independent_numpy_forward(seed: int) -> None:
    model = _randomised(create_model("ststnet"), seed).eval()
    x = torch.rand((5, 3, 28, 28), generator=torch.Generator().manual_seed(seed + 10)) * 255
    with torch.no_grad():
        ours = model(x).double().numpy()
    state = {name: t.double().numpy() for name, t in model.state_dict().items()}
    reference = _numpy_ststnet(x.double().numpy(), state)
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-3)
    # Logits far from zero, so the tolerance above is tight relative to them.
    assert np.abs(reference).max() > 10.0


def test_dropout_acts_only_in_training() -> None:
    model = create_model("ststnet")
    x = torch.full((2, 3, 28, 28), 100.0)
    torch.manual_seed(0)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))
    assert create_model("ststnet", drop_rate=0.0).dropout.p == 0.0


def test_input_contract_is_the_releases() -> None:
    cfg = create_model("ststnet").cfg
    assert cfg.input_size == (3, 28, 28)
    assert cfg.channel_order == "BGR"
    assert cfg.channels == ("optical_strain", "v", "u")
    assert cfg.value_range == (0.0, 255.0)
    assert cfg.mean is None and cfg.std is None
    assert cfg.label_names == MEGC2019_LABELS == ("negative", "positive", "surprise")


def test_other_label_sets_change_the_head_only() -> None:
    model = create_model("ststnet", label_names=("negative", "positive", "surprise", "others"))
    assert model.num_classes == 4 and model.fc.out_features == 4
    assert model.cfg.label_names[-1] == "others"
    assert model.cfg.input_size == (3, 28, 28) and model.cfg.channel_order == "BGR"
    assert model(torch.zeros(1, 3, 28, 28)).shape == (1, 4)


def test_training_flip_mirrors_the_image_and_flips_u() -> None:
    """flip_prob=1 in training is the plain network on the mirrored image (u -> 255 - u)."""
    x = torch.rand(4, 3, 28, 28) * 255
    mirrored = x.flip(-1)
    mirrored[:, 2] = 255 - mirrored[:, 2]  # plane 2 of the BGR composite is u
    flipping = create_model("ststnet", flip_prob=1.0, drop_rate=0.0).train()
    plain = create_model("ststnet", drop_rate=0.0).train()
    plain.load_state_dict(flipping.state_dict())
    torch.testing.assert_close(flipping(x), plain(mirrored))
    # Evaluation never mirrors, and the option adds no parameters (release checkpoints still load).
    flipping.eval(), plain.eval()
    torch.testing.assert_close(flipping(x), plain(x))
    assert flipping.state_dict().keys() == plain.state_dict().keys()


def test_random_shift_moves_each_image_by_whole_pixels_within_the_bound() -> None:
    """Each image is its edge-padded self moved by -k..k pixels in x and y, chosen per image."""
    from engines.models.blocks import random_shift

    torch.manual_seed(0)
    x = torch.rand(64, 3, 12, 12)
    shifted = random_shift(x, 2)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="replicate")
    offsets = set()
    for n in range(64):
        found = [(dy, dx) for dy in range(5) for dx in range(5)
                 if torch.equal(shifted[n], padded[n, :, dy:dy + 12, dx:dx + 12])]
        assert len(found) == 1, n  # random images: exactly one offset explains it
        offsets.add(found[0])
    assert len(offsets) >= 15  # 25 possible (the unshifted (2, 2) among them), drawn per image
    assert torch.equal(random_shift(x, 0), x)


def test_training_shift_is_the_plain_network_on_a_shifted_image() -> None:
    """shift_px in training draws the shift from torch's generator; evaluation never shifts, and
    the option adds no parameters (release checkpoints still load)."""
    from engines.models.blocks import random_shift

    x = torch.rand(8, 3, 28, 28) * 255
    shifting = create_model("ststnet", shift_px=2, drop_rate=0.0).train()
    plain = create_model("ststnet", drop_rate=0.0).train()
    plain.load_state_dict(shifting.state_dict())
    torch.manual_seed(5)
    out = shifting(x)
    torch.manual_seed(5)
    torch.testing.assert_close(out, plain(random_shift(x, 2)))
    assert not torch.allclose(out, plain(x))
    plain.load_state_dict(shifting.state_dict())  # the same BatchNorm running statistics
    shifting.eval(), plain.eval()
    torch.testing.assert_close(shifting(x), plain(x))
    assert shifting.state_dict().keys() == plain.state_dict().keys()
