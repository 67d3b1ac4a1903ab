import numpy as np
import pytest
import torch

from micro_seg.errors import ModelError
from micro_seg.nets import available_architectures, build_network, count_gflops_per_mp, required_stride


@pytest.mark.parametrize("arch", ["msnet", "msnet-s", "msnet-l"])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_msnet_shapes(arch, in_channels):
    torch.manual_seed(0)
    net = build_network(arch, in_channels=in_channels, num_classes=3).eval()
    assert required_stride(net) == 16
    with torch.inference_mode():
        out = net(torch.randn(2, in_channels, 64, 48))
    assert out.shape == (2, 3, 64, 48)
    assert torch.isfinite(out).all()


def test_msnet_custom_widths_stride():
    net = build_network("msnet", in_channels=1, num_classes=2, widths=(4, 8, 12), blocks=(1, 1, 2))
    assert net.stride == 4
    assert net(torch.zeros(1, 1, 8, 12)).shape == (1, 2, 8, 12)


def test_smp_unet_resnet18_builds_without_download():
    net = build_network("smp-unet-resnet18", in_channels=1, num_classes=2).eval()
    assert required_stride(net) == 32
    with torch.inference_mode():
        assert net(torch.zeros(1, 1, 64, 64)).shape == (1, 2, 64, 64)


def test_generic_smp_name():
    net = build_network("smp:FPN:resnet18", in_channels=3, num_classes=4)
    assert net(torch.zeros(1, 3, 64, 64)).shape == (1, 4, 64, 64)


@pytest.mark.parametrize("arch", ["nope", "smp:Unet", "smp:NoSuchArch:resnet18", "smp:Unet:no-such-encoder"])
def test_unknown_architecture_names_available(arch):
    with pytest.raises(ModelError) as info:
        build_network(arch, in_channels=1, num_classes=2)
    assert arch.split(":")[0] in str(info.value) or "smp" in str(info.value)


def test_unknown_arch_message_lists_names():
    with pytest.raises(ModelError, match="msnet"):
        build_network("unet-9000", in_channels=1, num_classes=2)
    assert "msnet" in available_architectures()


def test_bad_msnet_options():
    with pytest.raises(ModelError):
        build_network("msnet", in_channels=1, num_classes=2, widths=(8,))
    with pytest.raises(ModelError):
        build_network("msnet", in_channels=1, num_classes=2, widths=(8, 16), blocks=(1,))
    with pytest.raises(ModelError):
        build_network("msnet", in_channels=1, num_classes=2, nonsense=3)


def test_flop_count_matches_hand_count():
    # two levels: conv 1->4 full res, conv 4->8 stride 2, fuse conv (8+4)->4, head 1x1 4->2
    net = build_network("msnet", in_channels=1, num_classes=2, widths=(4, 8), blocks=(1, 1))
    per_px = 2 * 9 * 1 * 4 + 2 * 9 * 4 * 8 / 4 + 2 * 9 * 12 * 4 + 2 * 4 * 2
    assert count_gflops_per_mp(net, size=64) == pytest.approx(per_px * 1e6 / 1e9, rel=1e-6)


def test_default_msnet_much_cheaper_than_unet_resnet18():
    msnet = count_gflops_per_mp(build_network("msnet", in_channels=1, num_classes=2))
    unet = count_gflops_per_mp(build_network("smp-unet-resnet18", in_channels=1, num_classes=2))
    assert 140 < unet < 190  # ~165 GFLOP/MP reference
    assert msnet * 4 < unet
