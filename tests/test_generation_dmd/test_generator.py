"""OneStepGenerator: G(z) = D(sigma z; sigma), per-seed noise, folders that round-trip."""
import json
import os.path as osp

import pytest
import torch

from generation_dmd.adapters import DiffusersDenoiser
from generation_dmd.generator import (GeneratorLoadError, OneStepGenerator, load_generator,
                                      save_generator, to_uint8)
from generation_dmd.networks import EDMPrecond
from generation_dmd.pairs import pair_latents
from tests.helpers.tiny_models import save_ddpm_pipeline


def tiny_edm(label_dim=10):
    torch.manual_seed(0)
    return EDMPrecond(img_resolution=8, img_channels=3, label_dim=label_dim,
                      model_type='SongUNet', model_channels=16, channel_mult=[1], num_blocks=1,
                      attn_resolutions=[], dropout=0.1)


def test_forward_is_the_denoiser_at_sigma_with_one_hot_labels():
    net = tiny_edm().eval()
    gen = OneStepGenerator(net, sigma=79.5638)
    z = torch.randn(2, 3, 8, 8)
    expected = net(z * 79.5638, 79.5638, torch.eye(10)[[3, 7]])
    assert torch.equal(gen(z, torch.tensor([3, 7])), expected)
    assert torch.equal(gen(z, torch.eye(10)[[3, 7]]), expected)
    assert gen.image_shape == (3, 8, 8) and gen.num_classes == 10 and gen.format == 'edm'


def test_an_image_depends_on_its_seed_and_class_only():
    gen = OneStepGenerator(tiny_edm())
    gen.train()  # generate() switches dropout off by itself and restores the mode
    batch = gen.generate([11, 12, 13], class_ids=[0, 1, 2], batch_size=2)
    alone = gen.generate([12], class_ids=1)
    assert gen.training
    assert torch.allclose(batch[1], alone[0], atol=1e-6)
    net = gen.net.eval()
    expected = net(pair_latents([12], (3, 8, 8)) * 80.0, 80.0, torch.eye(10)[[1]]).clamp(-1, 1)
    assert torch.allclose(alone, expected, atol=1e-6)
    assert float(batch.min()) >= -1 and float(batch.max()) <= 1


def test_to_uint8_is_edms_quantisation():
    x = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.999, 1.0, 3.0])
    # (x * 127.5 + 128) clipped to [0, 255], truncated: -1 -> 0.5 -> 0, 0 -> 128, 1 -> 255.5 -> 255
    assert to_uint8(x).tolist() == [0, 0, 64, 128, 255, 255, 255]


def test_label_and_sigma_errors():
    gen = OneStepGenerator(tiny_edm())
    with pytest.raises(ValueError, match='class-conditional \\(10 classes\\)'):
        gen.generate([0, 1])
    with pytest.raises(ValueError, match='in \\[0, 10\\)'):
        gen.generate([0, 1], class_ids=[3, 10])
    with pytest.raises(ValueError, match='2 class ids for 3 seeds'):
        gen.generate([0, 1, 2], class_ids=[3, 4])
    with pytest.raises(ValueError, match='unconditional'):
        OneStepGenerator(tiny_edm(label_dim=0)).generate([0], class_ids=[1])
    with pytest.raises(ValueError, match='finite positive'):
        OneStepGenerator(tiny_edm(), sigma=float('inf'))
    with pytest.raises(TypeError, match='EDM preconditioner'):
        OneStepGenerator(torch.nn.Conv2d(3, 3, 1))


def test_edm_generator_folder_round_trip(tmp_path):
    gen = OneStepGenerator(tiny_edm(), sigma=79.5638)
    images = gen.generate([5, 6], class_ids=[2, 9])
    save_generator(gen, tmp_path / 'gen', metadata={'source': 'test'})
    config = json.loads((tmp_path / 'gen' / 'generator.json').read_text())
    assert config['format'] == 'edm' and config['sigma'] == 79.5638
    assert config['image_shape'] == [3, 8, 8] and config['num_classes'] == 10
    loaded = load_generator(tmp_path / 'gen')
    assert not loaded.training
    assert torch.equal(loaded.generate([5, 6], class_ids=[2, 9]), images)


def test_diffusers_generator_folder_round_trip(tmp_path):
    save_ddpm_pipeline(str(tmp_path / 'ddpm'))
    net = DiffusersDenoiser(pretrained=str(tmp_path / 'ddpm'))
    with pytest.raises(ValueError, match='largest trained'):
        OneStepGenerator(net, sigma=1e4)
    gen = OneStepGenerator(net, sigma=net.sigma_max)
    assert gen.format == 'diffusers' and gen.num_classes is None
    images = gen.generate([1, 2])
    save_generator(gen, tmp_path / 'gen')
    loaded = load_generator(tmp_path / 'gen')
    assert torch.equal(loaded.generate([1, 2]), images)


def test_load_errors(tmp_path):
    with pytest.raises(GeneratorLoadError, match='generator.json is missing'):
        load_generator(tmp_path)
    gen = OneStepGenerator(tiny_edm())
    save_generator(gen, tmp_path / 'gen')
    path = osp.join(tmp_path, 'gen', 'generator.json')
    config = json.loads(open(path).read())
    config['num_classes'] = 100
    open(path, 'w').write(json.dumps(config))
    with pytest.raises(GeneratorLoadError, match='Re-export it'):
        load_generator(tmp_path / 'gen')
    open(path, 'w').write('{not json')
    with pytest.raises(GeneratorLoadError, match='not a valid generator config'):
        load_generator(tmp_path / 'gen')
