"""carseg.models.resnet_unet: any input size, every parameter trained, torchvision's key layout,
and ImageNet weights files loaded key for key or refused naming what does not fit."""

from __future__ import annotations

import importlib
import logging
import os
import re

import pytest
import torch

from carseg.models.resnet_unet import ResNetUNet
from carseg.models.unet import UNet
from carseg.utils.errors import DataError, DataNotFoundError

# BasicBlocks per stage of torchvision's resnet18 and resnet34
TORCHVISION_LAYERS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


def torchvision_layout(depth: int, in_channels: int = 3) -> dict[str, tuple[int, ...]]:
    """The keys and shapes of torchvision's ``resnet{depth}().state_dict()``, in its order,
    written out from torchvision's layout (torchvision does not import here)."""
    keys: dict[str, tuple[int, ...]] = {"conv1.weight": (64, in_channels, 7, 7)}

    def batch_norm(prefix: str, channels: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{prefix}.{name}"] = (channels,)
        keys[f"{prefix}.num_batches_tracked"] = ()

    batch_norm("bn1", 64)
    c_in = 64
    for stage, (count, width) in enumerate(
        zip(TORCHVISION_LAYERS[depth], (64, 128, 256, 512), strict=True), start=1
    ):
        for block in range(count):
            p = f"layer{stage}.{block}"
            keys[f"{p}.conv1.weight"] = (width, c_in if block == 0 else width, 3, 3)
            batch_norm(f"{p}.bn1", width)
            keys[f"{p}.conv2.weight"] = (width, width, 3, 3)
            batch_norm(f"{p}.bn2", width)
            if block == 0 and stage > 1:  # the stride-2 shortcut
                keys[f"{p}.downsample.0.weight"] = (width, c_in, 1, 1)
                batch_norm(f"{p}.downsample.1", width)
        c_in = width
    keys["fc.weight"], keys["fc.bias"] = (1000, 512), (1000,)
    return keys


def weights_file(path, depth: int, drop=(), in_channels: int = 3, seed: int = 0):
    """A weights file in torchvision's layout with random tensors (``drop``: keys left out)."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in torchvision_layout(depth, in_channels).items():
        if key in drop:
            continue
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1234)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        else:
            state[key] = torch.randn(shape, generator=generator)
    torch.save(state, path)
    return state


def resnet_unet(depth: int = 34, **options) -> ResNetUNet:
    """A ResNet U-Net with conf/model/net/resnet34_unet.yaml's settings unless changed."""
    settings = {"in_channels": 3, "decoder_width": 16, "encoder_weights": None}
    return ResNetUNet(depth=depth, **{**settings, **options})


@pytest.mark.parametrize("depth", [18, 34])
@pytest.mark.parametrize(("height", "width"), [(64, 96), (37, 53), (100, 17)])
def test_output_size_equals_input_size(depth, height, width):
    """Sides that are and are not multiples of 32 give logits of the input's size."""
    model = resnet_unet(depth, decoder_width=4).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, height, width))
    assert logits.shape == (2, 1, height, width)


@pytest.mark.parametrize("depth", [18, 34])
def test_every_parameter_gets_a_gradient(depth):
    model = resnet_unet(depth, decoder_width=4)
    model(torch.randn(2, 3, 37, 53)).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing


@pytest.mark.parametrize("depth", [18, 34])
def test_encoder_keys_are_torchvisions_without_the_classifier(depth):
    """Names, order and shapes, buffers included: torchvision's files load key for key."""
    expected = {k: v for k, v in torchvision_layout(depth).items() if not k.startswith("fc.")}
    encoder = resnet_unet(depth).encoder.state_dict()
    assert [(k, tuple(v.shape)) for k, v in encoder.items()] == list(expected.items())
    # and they sit under one fixed prefix of the whole network's keys
    net_keys = [k for k in resnet_unet(depth).state_dict() if k.startswith("encoder.")]
    assert net_keys == [f"encoder.{k}" for k in expected]


def test_parameter_counts():
    """Measured: the encoders are torchvision's resnet18/34 (11,689,512 and 21,797,672
    parameters) less fc's 513,000; the decoder at width 16 adds 3,151,569 to either."""
    counts = {}
    for depth in (18, 34):
        model = resnet_unet(depth)
        counts[depth] = (
            sum(p.numel() for p in model.encoder.parameters()),
            sum(p.numel() for p in model.parameters()),
        )
    assert counts == {18: (11_176_512, 14_328_081), 34: (21_284_672, 24_436_241)}


def test_returns_logits_not_probabilities():
    model = resnet_unet(18, decoder_width=4).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        model.decoder.outc.conv.bias.fill_(-5.0)
        low = model(x)
        model.decoder.outc.conv.bias.fill_(5.0)
        high = model(x)
    assert low.max() < 0 and high.min() > 1


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_scripted_model_matches_eager():
    """TorchScript (export.py format=torchscript) scripts the network and computes the same."""
    model = resnet_unet(18, decoder_width=4).eval()
    scripted = torch.jit.script(model)
    x = torch.randn(2, 3, 37, 53)
    with torch.no_grad():
        assert torch.allclose(scripted(x), model(x), atol=1e-5)


@pytest.mark.parametrize("depth", [18, 34])
def test_a_torchvision_weights_file_loads_into_the_encoder(depth, tmp_path, caplog):
    path = tmp_path / f"resnet{depth}.pth"
    state = weights_file(path, depth)
    with caplog.at_level(logging.INFO, logger="carseg.models.resnet_unet"):
        model = resnet_unet(depth, encoder_weights=str(path))
    loaded = model.encoder.state_dict()
    assert set(loaded) == {k for k in state if not k.startswith("fc.")}
    assert all(torch.equal(loaded[k], state[k]) for k in loaded)
    n = len(loaded)
    assert f"Loaded {n} tensors of {path} into the ResNet-{depth} encoder" in caplog.text
    assert "ignored fc.weight, fc.bias: the ImageNet classification head, not used" in caplog.text
    # the decoder is untouched: built as from scratch
    other = resnet_unet(depth)
    assert model.decoder.outc.conv.weight.shape == other.decoder.outc.conv.weight.shape


def test_a_file_without_batchnorm_counters_loads(tmp_path, caplog):
    """Older torchvision files have no num_batches_tracked: the counters stay at 0."""
    path = tmp_path / "old.pth"
    counters = [k for k in torchvision_layout(18) if k.endswith("num_batches_tracked")]
    state = weights_file(path, 18, drop=counters)
    with caplog.at_level(logging.INFO, logger="carseg.models.resnet_unet"):
        model = resnet_unet(18, encoder_weights=path)
    assert torch.equal(model.encoder.conv1.weight, state["conv1.weight"])
    assert int(model.encoder.bn1.num_batches_tracked) == 0
    assert f"no num_batches_tracked for {len(counters)} BatchNorm layers" in caplog.text


def test_a_checkpoint_holding_torchvisions_keys_loads_and_another_is_refused(tmp_path):
    state = weights_file(tmp_path / "plain.pth", 18)
    torch.save({"epoch": 90, "state_dict": state}, tmp_path / "ckpt.pth")
    model = resnet_unet(18, encoder_weights=tmp_path / "ckpt.pth")
    assert torch.equal(model.encoder.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    prefixed = {f"module.{k}": v for k, v in state.items()}  # keys that do not match as they are
    torch.save({"state_dict": prefixed}, tmp_path / "other.pth")
    with pytest.raises(DataError, match=r"\(its state_dict\) does not fit.*conv1\.weight"):
        resnet_unet(18, encoder_weights=tmp_path / "other.pth")


def _counts(depth_here: int, depth_there: int) -> tuple[int, int]:
    here = [k for k in torchvision_layout(depth_here) if not k.startswith("fc.")]
    there = [k for k in torchvision_layout(depth_there) if not k.startswith("fc.")]
    missing = [k for k in here if k not in there and not k.endswith("num_batches_tracked")]
    return len(missing), len([k for k in there if k not in here])


def test_a_resnet18_file_into_resnet34_is_refused_naming_the_first_missing_key(tmp_path):
    path = tmp_path / "resnet18.pth"
    weights_file(path, 18)
    missing, unexpected = _counts(34, 18)
    assert (missing, unexpected) == (80, 0)  # (layer1.2, layer2.2-3, layer3.2-5, layer4.2)
    message = (
        "does not fit the ResNet-34 encoder: the first mismatch is layer1.2.conv1.weight, "
        f"(64, 64, 3, 3) here, which the file lacks; {missing} keys missing, 0 unexpected"
    )
    with pytest.raises(DataError, match=re.escape(message)):
        resnet_unet(34, encoder_weights=path)


def test_a_resnet34_file_into_resnet18_is_refused_naming_the_first_extra_key(tmp_path):
    path = tmp_path / "resnet34.pth"
    weights_file(path, 34)
    _, unexpected = _counts(18, 34)
    message = (
        "the first mismatch is layer1.2.conv1.weight, (64, 64, 3, 3) in the file, which the "
        f"encoder lacks; 0 keys missing, {unexpected} unexpected, 0 of another shape"
    )
    with pytest.raises(DataError, match=re.escape(message)):
        resnet_unet(18, encoder_weights=path)


def test_a_file_cut_short_is_refused(tmp_path):
    whole, cut = tmp_path / "whole.pth", tmp_path / "cut.pth"
    weights_file(whole, 18)
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.pth is a damaged PyTorch weights file"):
        resnet_unet(18, encoder_weights=cut)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xd8\xff\xe0" + bytes(200), "is not a PyTorch weights file"),  # a JPEG
        (b"\x80\x04\x95" + bytes(200), "is not a PyTorch weights file"),  # a bare pickle
        (b"", "an empty file"),
    ],
)
def test_a_file_that_is_not_a_torch_file_gets_carsegs_message_not_torchs(
    tmp_path, content, message
):
    """One safe reader for every torch file: never torch's advice to set weights_only=False."""
    path = tmp_path / "resnet18.pth"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as caught:
        resnet_unet(18, encoder_weights=path)
    assert "weights_only" not in str(caught.value)
    assert "model.net.encoder_weights=null" in str(caught.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_file_holding_nan_or_inf_is_refused_where_it_enters(tmp_path, value):
    path = tmp_path / "resnet18.pth"
    state = weights_file(path, 18)
    state["layer1.0.bn1.running_var"][3] = value
    torch.save(state, path)
    with pytest.raises(DataError, match=r"NaN or infinite weights \(layer1\.0\.bn1\.running_var\)"):
        resnet_unet(18, encoder_weights=path)


def test_a_state_dict_missing_its_last_stage_is_refused(tmp_path):
    path = tmp_path / "truncated.pth"
    dropped = [k for k in torchvision_layout(34) if k.startswith("layer4.")]
    weights_file(path, 34, drop=dropped)
    missing = len([k for k in dropped if not k.endswith("num_batches_tracked")])
    message = (
        f"the first mismatch is layer4.0.conv1.weight, (512, 256, 3, 3) here, which the file "
        f"lacks; {missing} keys missing, 0 unexpected"
    )
    with pytest.raises(DataError, match=re.escape(message)):
        resnet_unet(34, encoder_weights=path)


def test_a_file_of_another_shape_is_refused_naming_both_shapes(tmp_path):
    path = tmp_path / "resnet18.pth"
    weights_file(path, 18)
    message = (
        "the first mismatch is conv1.weight, (64, 3, 7, 7) in the file but (64, 4, 7, 7) here; "
        "0 keys missing, 0 unexpected, 1 of another shape"
    )
    with pytest.raises(DataError, match=re.escape(message)):
        resnet_unet(18, in_channels=4, encoder_weights=path)


def test_a_state_dict_of_another_network_is_refused(tmp_path):
    path = tmp_path / "unet.pth"
    net = UNet(in_channels=3, base_width=4, depth=2, bilinear=True, batch_norm=True)
    torch.save(net.state_dict(), path)
    resnet = [k for k in torchvision_layout(18) if not k.startswith("fc.")]
    missing = len([k for k in resnet if not k.endswith("num_batches_tracked")])
    message = (
        "the first mismatch is conv1.weight, (64, 3, 7, 7) here, which the file lacks; "
        f"{missing} keys missing, {len(net.state_dict())} unexpected"
    )
    with pytest.raises(DataError, match=re.escape(message)):
        resnet_unet(18, encoder_weights=path)


@pytest.mark.parametrize(
    ("content", "what"),
    [([torch.zeros(3)], "list"), (torch.zeros(3), "Tensor"), ("resnet34", "str")],
)
def test_a_file_that_is_not_a_dict_is_refused(tmp_path, content, what):
    path = tmp_path / "weights.pth"
    torch.save(content, path)
    with pytest.raises(DataError, match=f"holds a {what}, not a state dict"):
        resnet_unet(18, encoder_weights=path)


def test_a_missing_path_or_a_folder_is_refused_saying_nothing_is_downloaded(tmp_path):
    for path, what in [
        (tmp_path / "resnet34-b627a593.pth", "no such file"),
        (tmp_path, "a folder"),
    ]:
        with pytest.raises(DataNotFoundError, match=f"{re.escape(str(path))}: {what}") as caught:
            resnet_unet(34, encoder_weights=str(path))
        assert "carseg downloads nothing" in str(caught.value)
        assert "model.net.encoder_weights=null" in str(caught.value)


class _RunsCode:
    """An object that, unpickled, would make a folder: what a malicious weights file would do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_a_file_that_would_run_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": _RunsCode(str(marker))}, path)
    with pytest.raises(DataError, match=r"evil\.pth was refused: it holds Python objects"):
        resnet_unet(18, encoder_weights=path)
    assert not marker.exists()


def test_a_depth_other_than_18_or_34_is_refused():
    with pytest.raises(ValueError, match="model.net.depth=50: choose 18 or 34"):
        resnet_unet(50)


def _import_or_skip(name: str, reason: str):
    """``pytest.importorskip`` that also skips where the module is installed but fails to import
    (torchvision's C ops raise a RuntimeError beside a torch of another build)."""
    try:
        return importlib.import_module(name)
    except Exception as err:
        pytest.skip(f"{reason} ({type(err).__name__}: {err})")


def test_encoder_features_equal_torchvisions_resnet34_with_the_same_weights(tmp_path):
    torchvision = _import_or_skip(
        "torchvision", "torchvision does not import beside this CPU build of torch"
    )
    torch.manual_seed(0)
    reference = torchvision.models.resnet34(weights=None)
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        for bn in (m for m in reference.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    path = tmp_path / "resnet34.pth"
    torch.save(reference.state_dict(), path)
    model = resnet_unet(34, encoder_weights=path).eval()
    reference.eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        stem = reference.relu(reference.bn1(reference.conv1(x)))
        expected = [stem, reference.layer1(reference.maxpool(stem))]
        for layer in (reference.layer2, reference.layer3, reference.layer4):
            expected.append(layer(expected[-1]))
        got = model.encoder(x)
    assert len(got) == len(expected) == 5
    for ours, theirs in zip(got, expected, strict=True):
        assert ours.shape == theirs.shape
        assert (ours - theirs).abs().max() < 1e-5
