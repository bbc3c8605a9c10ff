import pytest
import torch

from models import MODELS, build_model


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_maps_cifar_images_to_10_logits(name):
    torch.manual_seed(0)
    model = build_model(name, he_init=True).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32).to(memory_format=torch.channels_last))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


# He et al. 2016, table 6: parameter counts of the CIFAR ResNets, to the two digits it gives.
@pytest.mark.parametrize("name, params", [("resnet20", 0.27e6), ("resnet32", 0.46e6), ("resnet44", 0.66e6),
                                          ("resnet56", 0.85e6), ("resnet110", 1.7e6)])
def test_he_cifar_resnets_have_the_papers_sizes(name, params):
    count = sum(p.numel() for p in build_model(name).parameters())
    assert count == pytest.approx(params, rel=0.02)


def test_he_init_gives_kaiming_scale():
    torch.manual_seed(0)
    conv = build_model("resnet56", he_init=True).blocks[0].conv1.weight  # 16 x 16 x 3 x 3
    expected_std = (2.0 / (16 * 3 * 3)) ** 0.5
    assert conv.std().item() == pytest.approx(expected_std, rel=0.1)
    default = build_model("resnet56", he_init=False).blocks[0].conv1.weight
    assert default.std().item() < 0.7 * expected_std


def test_unknown_model_names_the_choices():
    with pytest.raises(ValueError, match="resnet20"):
        build_model("vgg16")
