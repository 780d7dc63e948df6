"""DSTAN: input contract, stream inputs, attentions, the two losses, SVM and average fusion, export, a tiny fit."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from engines.checkpoints import load_weights, write_state_dict
from engines.models import create_model
from engines.models.complexity import count_parameters
from engines.models.dstan import (
    ABSENT_CLASS_SCORE,
    DSTAN_TVL1,
    DualPoolChannelAttention,
    MultiScaleSpatialAttention,
    SVMFusion,
)
from engines.preprocess import LIVE_FLOW
from training.protocol import Fold
from training.recipes import RECIPE_DIR, load_recipe
from training.trainer import train_fold

CARD = Path(__file__).resolve().parents[1] / "docs" / "models" / "dstan.md"
# A CI-sized DSTAN: 32 px frames, widths 4..64, LSTM and LHFN width 8.
TINY = dict(image_size=32, base_width=4, hidden_size=8, lhfn_width=8)


# Small tensors: intra-op threads only contend on the shared 2-core CI machine.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(seed: int = 0, **options) -> torch.nn.Module:
    """A tiny DSTAN with seeded weights and non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    model = create_model("dstan", **{**TINY, **options})
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=generator))
    return model.eval()


def clips(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Random (n, 9, 5, size, size) clips: colour in 0..1, flow in +-3 px, the 9th frame's flow zero."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand((n, 9, 5, size, size), generator=generator)
    x[:, :, 3:] = 6 * x[:, :, 3:] - 3
    x[:, 8, 3:] = 0
    return x


def test_registered_with_the_tim_clip_contract() -> None:
    model = create_model("dstan", image_size=64)
    cfg = model.cfg
    assert cfg.input_size == (9, 5, 64, 64) == cfg.clip.sample_shape
    assert cfg.channels == ("r", "g", "b", "u_next", "v_next") == cfg.clip.channels
    assert (cfg.clip.frames, cfg.clip.anchors, cfg.clip.interpolation) == (9, "onset_apex_offset", "tim")
    assert (cfg.clip.flow, cfg.clip.flow_params, cfg.clip.size, cfg.clip.color) == ("tvl1", DSTAN_TVL1, 64, "rgb")
    assert create_model("dstan").cfg.input_size == (9, 5, 224, 224)
    live = create_model("dstan", image_size=64, flow_schedule="live").cfg.clip
    assert live.flow_params == LIVE_FLOW["flow_params"] and live.size == 64
    with pytest.raises(ValueError, match="flow_schedule must be one of opencv, live"):
        create_model("dstan", flow_schedule="fast")
    with pytest.raises(ValueError, match="fusion must be one of svm, average"):
        create_model("dstan", fusion="max")


def test_shapes_in_training_and_eval_mode() -> None:
    model = tiny()
    x = clips(2)
    frames, flows = model.streams(x)
    assert frames.shape == (2, 9, 3, 32, 32) and flows.shape == (2, 8, 2, 32, 32)
    with torch.no_grad():
        # Five 2x2 pools: 32 -> 16 -> 8 -> 4 (stage 3, low level) -> 2 -> 1.
        low = model.appearance.spatial.low(frames[:, 0])
        assert low.shape == (2, 16, 4, 4)
        assert model.appearance.spatial.high(low).shape == (2, 64, 1, 1)
        # LHFN: two 8-wide projections concatenated; the motion stream has no LHFN: GAP of stage 5.
        assert model.appearance.frame_features(frames).shape == (2, 9, 16)
        assert model.motion.frame_features(flows).shape == (2, 8, 64)
        features = model.forward_features(x)
        assert features.shape == (2, 16) == (2, model.num_features)
        assert torch.equal(model.forward_head(features, pre_logits=True), features)
        assert model(x).shape == (2, 3)
        model.train()
        assert model(x).shape == (2, 6)  # appearance logits, then motion logits
    with pytest.raises(ValueError, match=r"takes \(N, 9, 5, 32, 32\) clips, got \(2, 9, 3, 32, 32\)"):
        model(x[:, :, :3])


def test_basic_model_of_the_ablation_has_no_lhfn_and_no_attention() -> None:
    full, basic = tiny(), tiny(lhfn=False, spatial_attention=False, temporal_attention=False)
    for stream in (basic.appearance, basic.motion):
        assert stream.spatial.spatial_attention is None and stream.spatial.channel_attention is None
        assert stream.frame_score is None and stream.spatial.low_projection is None
    assert basic.appearance.frame_features(clips(1)[:, :, :3]).shape == (1, 9, 64)
    assert count_parameters(basic) < count_parameters(full)
    assert basic(clips(2)).shape == (2, 3)


def test_parameter_count_at_224_is_the_cards() -> None:
    count = count_parameters(create_model("dstan"))
    match = re.search(r"Trainable parameters \(measured\): ([\d,]+)", CARD.read_text(encoding="utf-8"))
    assert match, "the model card must state the parameter count"
    assert int(match.group(1).replace(",", "")) == count


def test_multiscale_spatial_attention_is_eq_2_to_4() -> None:
    torch.manual_seed(1)
    attention = MultiScaleSpatialAttention(4)
    x = torch.randn(2, 4, 6, 6)
    weights = attention(x)
    assert weights.shape == (2, 1, 6, 6)
    assert weights.min() > 0 and weights.max() < 1
    one, three, five = (F.conv2d(x, c.weight, c.bias, padding=k // 2) for c, k in zip(attention.scales, (1, 3, 5)))
    fuse = attention.fuse.weight.flatten()
    expected = torch.sigmoid(fuse[0] * one + fuse[1] * three + fuse[2] * five + attention.fuse.bias)
    torch.testing.assert_close(weights, expected)
    assert weights.std() > 0  # a real map, not a constant


def test_dual_pool_channel_attention_is_eq_5_and_6_with_biases() -> None:
    torch.manual_seed(2)
    attention = DualPoolChannelAttention(32, 16)
    with torch.no_grad():
        for conv in (attention.mlp[0], attention.mlp[2]):
            conv.bias.normal_()
    x = torch.randn(2, 32, 5, 5)
    weights = attention(x)
    assert weights.shape == (2, 32, 1, 1)
    assert weights.min() > 0 and weights.max() < 1
    w1, b1 = attention.mlp[0].weight.flatten(1), attention.mlp[0].bias  # C/r = 2 units
    w2, b2 = attention.mlp[2].weight.flatten(1), attention.mlp[2].bias
    assert w1.shape == (2, 32) and w2.shape == (32, 2)

    def mlp(v):
        return torch.relu(v @ w1.T + b1) @ w2.T + b2

    expected = torch.sigmoid(mlp(x.mean(dim=(2, 3))) + mlp(x.amax(dim=(2, 3))))
    torch.testing.assert_close(weights.flatten(1), expected)


def test_temporal_attention_weights_each_frame_before_the_lstm() -> None:
    model = tiny()
    stream = model.motion
    flows = model.streams(clips(2))[1]
    with torch.no_grad():
        features = stream.frame_features(flows)
        weights = stream.frame_weights(features)
        assert weights.shape == (2, 8, 1) and weights.min() > 0 and weights.max() < 1
        assert weights.std() > 0
        expected = stream.lstm(features * weights)[0].mean(dim=1)  # Eq. 8 then Eq. 1
        torch.testing.assert_close(stream.forward_features(flows), expected)


def test_each_stream_reads_only_its_planes() -> None:
    model = tiny()
    x = clips(2)

    def stream_logits(clip):
        with torch.no_grad():
            return model.stream_logits(model.forward_features(clip))

    appearance, motion = stream_logits(x)
    ninth_flow = x.clone()
    ninth_flow[:, 8, 3:] = 5.0  # the 9th slot's flow planes (zero by contract) are never read
    flow = x.clone()
    flow[:, :8, 3:] = -flow[:, :8, 3:]
    colour = x.clone()
    colour[:, :, :3] = 1 - colour[:, :, :3]
    for clip, appearance_same, motion_same in ((ninth_flow, True, True), (flow, True, False), (colour, False, True)):
        changed_appearance, changed_motion = stream_logits(clip)
        assert torch.equal(changed_appearance, appearance) == appearance_same
        assert torch.equal(changed_motion, motion) == motion_same


def test_training_loss_is_the_sum_of_the_streams_cross_entropies_with_separate_gradients() -> None:
    model = tiny().train()
    x, target = clips(4), torch.tensor([0, 1, 2, 1])
    weight = torch.tensor([1.0, 0.5, 2.0])
    torch.manual_seed(0)
    logits = model(x)
    appearance, motion = logits[:, :3], logits[:, 3:]
    loss = model.training_loss(logits, target, weight)
    expected = F.cross_entropy(appearance, target, weight=weight) + F.cross_entropy(motion, target, weight=weight)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    joint = {name: p.grad.clone() for name, p in model.named_parameters()}
    # The appearance stream's gradient from the joint loss is its own loss's gradient, and vice versa.
    for stream, half in (("appearance", slice(0, 3)), ("motion", slice(3, 6))):
        model.zero_grad()
        torch.manual_seed(0)
        F.cross_entropy(model(x)[:, half], target, weight=weight).backward()
        for name, p in model.named_parameters():
            if name.startswith(stream):
                torch.testing.assert_close(p.grad, joint[name])
            else:
                assert p.grad is None or not p.grad.any()
    with pytest.raises(ValueError, match=r"stream logits, got \(4, 3\)"):
        model.training_loss(logits[:, :3], target, None)


def _separable_features(n: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    features = rng.dirichlet(np.ones(2 * classes), size=n)
    features[np.arange(n), labels] += 1.0
    return features.astype(np.float32), labels


def test_svm_fusion_layer_reproduces_sklearns_decision_function() -> None:
    features, labels = _separable_features(40, 3, seed=0)
    fusion = SVMFusion(6, 3, c=1.0)
    svm = fusion.fit(features, labels, torch.tensor([1.0, 2.0, 0.5]), seed=3)
    assert svm.class_weight == {0: 1.0, 1: 2.0, 2: 0.5} and svm.random_state == 3
    assert bool(fusion.fitted)
    test = _separable_features(10, 3, seed=1)[0]
    with torch.no_grad():
        ours = fusion(torch.from_numpy(test)).numpy()
    np.testing.assert_allclose(ours, svm.decision_function(test), atol=1e-5)
    np.testing.assert_array_equal(ours.argmax(1), svm.predict(test))
    # Deterministic: the same fold refits to the same layer.
    again = SVMFusion(6, 3, c=1.0)
    again.fit(features, labels, torch.tensor([1.0, 2.0, 0.5]), seed=3)
    assert torch.equal(again.weight, fusion.weight) and torch.equal(again.bias, fusion.bias)


def test_svm_fusion_with_two_classes_present_keeps_sklearns_decision() -> None:
    features, labels = _separable_features(30, 2, seed=2)
    fusion = SVMFusion(4, 3, c=1.0)  # three classes, the last one absent from the fold
    svm = fusion.fit(features, labels, None, seed=0)
    with torch.no_grad():
        scores = fusion(torch.from_numpy(features)).numpy()
    np.testing.assert_allclose(scores[:, 1] - scores[:, 0], svm.decision_function(features), atol=1e-5)
    np.testing.assert_array_equal(scores.argmax(1), svm.predict(features))
    assert (scores[:, 2] == ABSENT_CLASS_SCORE).all()
    with pytest.raises(ValueError, match="two classes or more, got only"):
        SVMFusion(4, 3, c=1.0).fit(features, np.zeros(30, dtype=int), None, seed=0)


def test_eval_output_is_the_average_until_the_svm_is_fitted_then_the_svm(tmp_path: Path) -> None:
    model = tiny()
    x = clips(3, seed=4)
    with torch.no_grad():
        appearance, motion = model.stream_logits(model.forward_features(x))
        average = (appearance.softmax(1) + motion.softmax(1)) / 2
        unfitted = model(x)
    assert not bool(model.svm.fitted)
    torch.testing.assert_close(unfitted.softmax(1), average)  # documented fallback, not zero weights
    averaging = tiny(fusion="average")
    with torch.no_grad():
        torch.testing.assert_close(averaging(x).softmax(1), average)

    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    model.after_training(clips(6, seed=5), labels, None, seed=0)
    assert bool(model.svm.fitted) and not model.training
    probabilities = torch.cat((appearance.softmax(1), motion.softmax(1)), dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.svm(probabilities))
        # The fitted SVM travels in the checkpoint; an "average" model reads the same file.
        path = write_state_dict(model.state_dict(), tmp_path / "dstan.pth")
        reloaded = load_weights(create_model("dstan", **TINY).eval(), path)
        torch.testing.assert_close(reloaded(x), model(x))
        averaging = load_weights(create_model("dstan", fusion="average", **TINY).eval(), path)
        torch.testing.assert_close(averaging(x).softmax(1), average)


def _toy_clips(subjects: int, per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """3 classes told apart by colour (dark / mid / bright) and by flow direction (+u / -u / +v)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(3).repeat(subjects * per_class)
    x = 0.1 * torch.randn((len(labels), 9, 5, 32, 32), generator=generator)
    x[:, :, :3] += (0.25 + 0.25 * labels).reshape(-1, 1, 1, 1, 1)
    direction = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])[labels]
    x[:, :8, 3:] += direction.reshape(-1, 1, 2, 1, 1)
    x[:, 8, 3:] = 0
    subject_of = [f"s{i // (3 * per_class) + 1}" for i in range(len(labels))]
    return x, labels, subject_of


@pytest.fixture(scope="module")
def toy_fold():
    """One LOSO fold of the synthetic recipe on toy clips: (recipe, result, clips, labels, test indices)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    recipe = load_recipe("dstan", RECIPE_DIR / "dstan_synth.toml")
    x, labels, subjects = _toy_clips(subjects=4, per_class=3, seed=0)
    test = tuple(i for i, s in enumerate(subjects) if s == "s4")
    fold = Fold("s4", tuple(i for i in range(len(labels)) if i not in test), test)
    result = train_fold(recipe, fold, x, labels, subjects, ("a", "b", "c"))
    torch.set_num_threads(before)
    return recipe, result, x, labels, test


def test_synthetic_recipe_fits_a_separable_toy_task_and_the_svm(toy_fold) -> None:
    recipe, result, _, labels, test = toy_fold
    assert recipe.model == "dstan" and recipe.model_options["image_size"] == 32
    assert result.epochs_run == recipe.epochs
    assert bool(result.state_dict["svm.fitted"])  # the trainer called after_training
    accuracy = (result.scores.argmax(1) == labels[list(test)].numpy()).mean()
    assert accuracy > 2 / 3, accuracy  # chance is 1/3


def test_exports_to_onnx_with_the_lstm_and_the_fitted_svm(toy_fold, tmp_path: Path) -> None:
    import onnxruntime

    from engines.export import DEFAULT_OPSET, INPUT_NAME, export_onnx

    recipe, result, x, _, test = toy_fold
    model = create_model("dstan", label_names=("a", "b", "c"), **recipe.model_options).eval()
    model.load_state_dict(result.state_dict)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*SVM fusion is not fitted.*")
        path = export_onnx(model, tmp_path / "dstan.onnx", DEFAULT_OPSET, {})
    clips_in = x[list(test)]  # exported at batch 2, run at batch 9
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (scores,) = session.run(None, {INPUT_NAME: clips_in.numpy()})
    with torch.no_grad():
        expected = model(clips_in).softmax(1).numpy()
    assert scores.shape == (9, 3)
    np.testing.assert_allclose(scores, expected, atol=1e-4, rtol=0)
    assert np.ptp(expected, axis=0).max() > 0.1  # the scores depend on the clip


def test_exporting_an_unfitted_svm_model_warns_and_exports_the_average(tmp_path: Path) -> None:
    import onnxruntime

    from engines.export import DEFAULT_OPSET, INPUT_NAME, export_onnx

    model = tiny()
    with pytest.warns(UserWarning, match="SVM fusion is not fitted"):
        path = export_onnx(model, tmp_path / "unfitted.onnx", DEFAULT_OPSET, {})
    x = clips(3, seed=6)
    (scores,) = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {INPUT_NAME: x.numpy()}
    )
    with torch.no_grad():
        appearance, motion = model.stream_logits(model.forward_features(x))
    average = ((appearance.softmax(1) + motion.softmax(1)) / 2).numpy()
    np.testing.assert_allclose(scores, average, atol=1e-5, rtol=0)


def test_paper_recipe_is_adam_with_batch_32() -> None:
    recipe = load_recipe("dstan")
    assert (recipe.model, recipe.optimizer, recipe.batch_size) == ("dstan", "adam", 32)
